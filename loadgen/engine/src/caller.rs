//! A caller: one connection and one kind of call (its RPC and request, encoded once), and what
//! one call came to. The closed loop's callers and the open loop's dispatchers make their calls
//! through it.

use std::time::Duration;

use fanout_proto::paths;
use std::sync::Arc;

use fanout_proto::v1::{
    AggregateEvent, AggregateReply, AggregateRequest, BackendResult, FetchReply, FetchRequest,
    Summary, aggregate_event::Event, backend_result,
};
use tokio::time::{Instant, timeout};
use tonic::Code;
use tracing::Instrument;

use crate::conn::{Conn, Prepared};
use crate::grpc::decode;
use crate::model::Rpc;
use crate::stats::Stats;

/// What the load calls with: one connection, and one kind of call (its RPC and request)
/// encoded once, sent again for every call. Shared (behind an `Arc`) by every call over its
/// connection, so a call costs no copy of it.
///
/// Not `Call`: that names one call, and the aggregator's `call` module is one backend call
/// with its retries; a `Caller` is what makes the calls, many of them.
#[derive(Debug, Clone)]
pub struct Caller {
    conn: Conn,
    rpc: Rpc,
    request: Prepared,
    /// A backend whose part failing does not make a call degraded: one a scenario broke on
    /// purpose, so its failure is the expected answer (see [`Caller::excusing`]).
    excused: Option<Arc<str>>,
}

/// What one call came to.
pub struct Done {
    /// The call's status.
    pub code: Code,
    /// A successful aggregate call in which some backend (not the excused one) failed or timed
    /// out.
    pub degraded: bool,
    /// Streams: time to the first result event.
    pub first_result: Option<Duration>,
    /// Streams: result events received.
    pub results: u64,
}

impl Done {
    /// Records this call, which took `latency`, into `stats`.
    pub fn record(&self, stats: &mut Stats, latency: Duration) {
        stats.record(self.code, latency);
        if self.code == Code::Ok && !self.degraded {
            stats.record_good(latency);
        }
        if let Some(t) = self.first_result {
            stats.record_first_result(t);
        }
        stats.degraded += u64::from(self.degraded);
        stats.stream_results += self.results;
    }

    pub fn status(code: Code) -> Self {
        Done {
            code,
            degraded: false,
            first_result: None,
            results: 0,
        }
    }
}

impl Caller {
    /// Calls of `rpc` over `conn`: `fetch` for a `Fetch`, `aggregate` for the other two;
    /// `timeout` is sent as each call's `grpc-timeout`.
    pub fn new(
        conn: &Conn,
        rpc: Rpc,
        fetch: &FetchRequest,
        aggregate: &AggregateRequest,
        timeout: Option<Duration>,
    ) -> Self {
        let request = match rpc {
            Rpc::Fetch => Prepared::new(paths::BACKEND_FETCH, fetch, timeout),
            Rpc::Aggregate => Prepared::new(paths::AGGREGATE, aggregate, timeout),
            Rpc::Stream => Prepared::new(paths::AGGREGATE_STREAM, aggregate, timeout),
        };
        Caller {
            conn: conn.clone(),
            rpc,
            request,
            excused: None,
        }
    }

    /// The same calls, with `backend`'s failures not counted as degradation: a scenario that
    /// broke that backend expects its part to fail, and asks whether the rest still arrive.
    /// Without it (the usual case) a call is degraded when its summary counts any failure,
    /// which costs no look at the results.
    pub fn excusing(self, backend: Option<&str>) -> Self {
        Caller {
            excused: backend.map(Arc::from),
            ..self
        }
    }

    /// Whether a call with these results (and this summary) is degraded.
    fn degraded(&self, results: &[BackendResult], summary: &Summary) -> bool {
        match &self.excused {
            None => summary.failed + summary.timed_out > 0,
            Some(excused) => results.iter().any(|r| self.counts_against(r, excused)),
        }
    }

    /// Whether `r` is a failure of a backend other than `excused`.
    fn counts_against(&self, r: &BackendResult, excused: &str) -> bool {
        matches!(r.outcome, Some(backend_result::Outcome::Failure(_))) && r.backend != excused
    }

    /// The connection its calls go over.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Makes the call once; the status is the target's answer (the probe before a run).
    pub async fn once(&self) -> Result<(), tonic::Status> {
        let span = tracing::Span::none();
        match self.rpc {
            Rpc::Fetch => {
                decode::<FetchReply>(self.conn.unary(&self.request, &span).await?).map(drop)
            }
            Rpc::Aggregate => {
                decode::<AggregateReply>(self.conn.unary(&self.request, &span).await?).map(drop)
            }
            Rpc::Stream => {
                self.conn
                    .server_stream(&self.request, &span, |m| {
                        decode::<AggregateEvent>(m).map(drop)
                    })
                    .await
            }
        }
    }

    /// Makes one call of the load, bounded by `limit` if given.
    pub async fn invoke(&self, limit: Option<Duration>) -> Done {
        // A client span, only when traces are exported (otherwise this is a no-op); its
        // context travels with the request.
        let span = tracing::info_span!("call", otel.name = "loadgen call", otel.kind = "client");
        let call = async {
            match self.rpc {
                // The answer is counted by its status, not decoded: the probe before the run
                // checked that this target answers Fetch with FetchReply.
                Rpc::Fetch => match self.conn.unary(&self.request, &span).await {
                    Ok(_) => Done::status(Code::Ok),
                    Err(s) => Done::status(s.code()),
                },
                Rpc::Aggregate => {
                    let reply = match self.conn.unary(&self.request, &span).await {
                        Ok(answer) => decode::<AggregateReply>(answer),
                        Err(s) => Err(s),
                    };
                    match reply {
                        Ok(reply) => {
                            let s = reply.summary.unwrap_or_default();
                            Done {
                                degraded: self.degraded(&reply.results, &s),
                                ..Done::status(Code::Ok)
                            }
                        }
                        Err(s) => Done::status(s.code()),
                    }
                }
                Rpc::Stream => {
                    let started = Instant::now();
                    let mut done = Done::status(Code::Ok);
                    let streamed = self
                        .conn
                        .server_stream(&self.request, &span, |message| {
                            match decode::<AggregateEvent>(message)?.event {
                                Some(Event::Result(r)) => {
                                    done.results += 1;
                                    done.first_result.get_or_insert_with(|| started.elapsed());
                                    if let Some(excused) = &self.excused {
                                        done.degraded |= self.counts_against(&r, excused);
                                    }
                                }
                                Some(Event::Summary(s)) if self.excused.is_none() => {
                                    done.degraded = s.failed + s.timed_out > 0
                                }
                                Some(Event::Summary(_)) => {}
                                None => {}
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(s) = streamed {
                        done.code = s.code();
                    }
                    done
                }
            }
        };
        let call = call.instrument(span.clone());
        match limit {
            Some(limit) => timeout(limit, call)
                .await
                .unwrap_or(Done::status(Code::DeadlineExceeded)),
            None => call.await,
        }
    }
}

/// Callers for `rpc`, one per connection; `timeout` is sent as each call's `grpc-timeout`.
pub fn callers(
    rpc: Rpc,
    conns: &[Conn],
    fetch: &FetchRequest,
    aggregate: &AggregateRequest,
    timeout: Option<Duration>,
) -> Vec<Caller> {
    conns
        .iter()
        .map(|conn| Caller::new(conn, rpc, fetch, aggregate, timeout))
        .collect()
}
