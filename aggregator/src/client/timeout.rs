//! One attempt's bound: the smaller of the attempt timeout and what the call's deadline leaves.
//! tower's `Timeout` takes one fixed duration; here each request brings its own (a request may
//! ask for a shorter attempt timeout, and the deadline shrinks as the call goes on).
//!
//! The layer narrows the request's deadline to the attempt's for the service below, which sends
//! it to the backend as `grpc-timeout`, and tells apart the two ways an attempt runs out of
//! time: its own timeout (retryable: the call has time for another) or the call's deadline
//! (final).

use std::task::{Context, Poll};
use std::time::Duration;

use fanout_proto::limits::MIN_TIMEOUT;
use futures::future::{BoxFuture, FutureExt};
use tokio::time::Instant;
use tonic::Code;
use tower::{Layer, Service};

use super::call::{AttemptNumber, Deadline, Param, PerAttemptTimeout, SetParam};
use super::error::{CallError, Phase};

/// Makes [`AttemptTimeout`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttemptTimeoutLayer;

impl<S> Layer<S> for AttemptTimeoutLayer {
    type Service = AttemptTimeout<S>;
    fn layer(&self, inner: S) -> AttemptTimeout<S> {
        AttemptTimeout { inner }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct AttemptTimeout<S> {
    inner: S,
}

impl<S, Req> Service<Req> for AttemptTimeout<S>
where
    Req: Param<Deadline> + SetParam<Deadline> + Param<PerAttemptTimeout> + Param<AttemptNumber>,
    S: Service<Req, Error = CallError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<S::Response, CallError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let started = Instant::now();
        let (Deadline(deadline), PerAttemptTimeout(own), AttemptNumber(number)) =
            (req.param(), req.param(), req.param());
        let left = deadline.saturating_duration_since(started);
        let limit = own.min(left);
        let timed_out = timed_out(number, limit, own < left);
        req.set_param(Deadline(started + limit));
        let call = tokio::time::timeout(limit, self.inner.call(req));
        async move {
            match call.await {
                Ok(Ok(reply)) => Ok(reply),
                // A backend that gives up at the grpc-timeout it was sent (or tonic's own timer
                // for it) answers CANCELLED or DEADLINE_EXCEEDED a moment before our timer fires:
                // that is this attempt running out of time too.
                Ok(Err(CallError::Status(status)))
                    if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded)
                        && started.elapsed() + MIN_TIMEOUT >= limit =>
                {
                    Err(timed_out)
                }
                Ok(Err(other)) => Err(other),
                Err(_elapsed) => Err(timed_out),
            }
        }
        .boxed()
    }
}

/// The error of an attempt that ran out of time after `limit`: its own timeout when that was
/// the bound (`own`), else the call's deadline.
fn timed_out(attempt: u32, limit: Duration, own: bool) -> CallError {
    if own {
        CallError::AttemptTimeout {
            attempt,
            after: limit,
        }
    } else {
        CallError::Deadline(Phase::DuringAttempt)
    }
}

#[cfg(test)]
mod tests;
