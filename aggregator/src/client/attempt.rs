//! One attempt at a backend, as the retry layer sees it: an `attempt` span (its trace context is
//! what the backend's span hangs under), a count, and the attempt's number (its place among all
//! the call's attempts, [`AttemptNumber`]) set for the layers below and on the result. An
//! attempt that would start with no time left before the deadline is not made.

use std::sync::Arc;
use std::task::{Context, Poll};

use fanout_proto::limits::MIN_TIMEOUT;
use fanout_telemetry::propagation;
use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};
use tracing::Instrument;

use fanout_server::metrics::ByCode;

use super::call::{AttemptNumber, Attempts, Deadline, IsHedge, Param, SetParam, Try};
use super::error::{CallError, Failed, Phase};
use super::{Answered, StackCounters};

/// Makes [`Attempt`]s.
#[derive(Debug, Clone)]
pub struct AttemptLayer {
    counters: Arc<StackCounters>,
    durations: Option<Arc<ByCode>>,
}

impl AttemptLayer {
    /// Counts attempts in `counters`; records their durations in `durations` when metrics are
    /// on.
    pub fn new(counters: Arc<StackCounters>, durations: Option<Arc<ByCode>>) -> Self {
        AttemptLayer {
            counters,
            durations,
        }
    }
}

impl<S> Layer<S> for AttemptLayer {
    type Service = Attempt<S>;
    fn layer(&self, inner: S) -> Attempt<S> {
        Attempt {
            inner,
            counters: self.counters.clone(),
            durations: self.durations.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Attempt<S> {
    inner: S,
    counters: Arc<StackCounters>,
    durations: Option<Arc<ByCode>>,
}

impl<S, Req, R> Service<Req> for Attempt<S>
where
    Req: Param<Deadline> + Param<Try> + Param<IsHedge> + Param<Attempts> + SetParam<AttemptNumber>,
    S: Service<Req, Response = R, Error = CallError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = Answered<R>;
    type Error = Failed;
    type Future = BoxFuture<'static, Result<Answered<R>, Failed>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        self.inner.poll_ready(cx).map_err(|error| Failed {
            error,
            attempts: 0,
            stopped: None,
            hedged: false,
        })
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let (deadline, made, try_, IsHedge(hedge)): (Deadline, Attempts, Try, _) =
            (req.param(), req.param(), req.param(), req.param());
        if deadline.left() < MIN_TIMEOUT {
            let phase = if made.made() == 0 {
                Phase::BeforeTurn
            } else {
                Phase::BeforeAttempt
            };
            let failed = Failed {
                error: CallError::Deadline(phase),
                attempts: made.made(),
                stopped: None,
                hedged: false,
            };
            return futures::future::ready(Err(failed)).boxed();
        }
        let AttemptNumber(number) = made.next();
        req.set_param(AttemptNumber(number));
        StackCounters::bump(&self.counters.attempts);
        let span = tracing::info_span!(
            "attempt",
            otel.name = format!("attempt {number}"),
            attempt = number,
            try_number = try_.number,
            hedge,
            backoff_ms = try_.backoff.as_secs_f64() * 1e3,
            endpoint = tracing::field::Empty,
            queued_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
        );
        // From here to the answer, the wait for a slot included; an attempt dropped unanswered
        // (a hedge that lost, a call cancelled) is recorded as CANCELLED.
        let timer = self.durations.as_ref().map(ByCode::start);
        // Called inside the span: the client below sends this span's trace context.
        let call = span.in_scope(|| self.inner.call(req));
        async move {
            let result = call.await;
            if let Some(timer) = timer {
                timer.end(
                    result
                        .as_ref()
                        .map_or_else(|e| e.code(), |_| tonic::Code::Ok) as i32,
                );
            }
            match result {
                Ok(reply) => {
                    tracing::Span::current().record("outcome", "OK");
                    Ok(Answered {
                        reply,
                        attempts: made.made(),
                        from_cache: false,
                        winner: number,
                        hedged: false,
                    })
                }
                Err(error) => {
                    let span = tracing::Span::current();
                    span.record("outcome", fanout_proto::code_name(error.code()));
                    propagation::set_error(&span, error.to_string());
                    Err(Failed {
                        error,
                        attempts: made.made(),
                        stopped: None,
                        hedged: false,
                    })
                }
            }
        }
        .instrument(span)
        .boxed()
    }
}

#[cfg(test)]
mod tests;
