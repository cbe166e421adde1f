//! The three ways of waiting for several backends, each producing the backends' results as a
//! stream in the order they complete.
//!
//! - `concurrent`: every backend call at once in a `FuturesUnordered` (`asyncio.gather`, results
//!   as they finish); the call takes about as long as the slowest backend.
//! - `sequential`: one after another (`for url in urls: await get(url)`); the call takes the sum.
//! - `blocking`: one after another, each waited for by *blocking the async worker thread*, the
//!   "sync HTTP client inside `async def`" mistake, reproduced on purpose. The backend call itself
//!   runs on a separate small runtime (as a sync client does its own I/O); the aggregator's worker
//!   just sits in `recv()` until it is done, serving nothing else meanwhile.
//!
//! Dropping a stream drops every backend call still outstanding (except a blocking one already
//! waited on: a blocked thread cannot be interrupted, which is part of the lesson).

use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

use fanout_proto::v1::{BackendResult, Fanout, FetchRequest, Summary, backend_result::Outcome};
use fanout_server::thread::runtime;
use fanout_telemetry::propagation;
use futures::stream::{self, BoxStream, FuturesUnordered, StreamExt};
use tonic::Code;
use tracing::Instrument;

use crate::backends::{Backend, Backends};
use crate::client::error::{CallError, Failed};
use crate::client::limit::Reservation;
use crate::client::{Call, StackCounters};
use crate::request::Plan;

/// Runs plans against the backends: gathers each target backend's result as a stream.
#[derive(Debug)]
pub struct Gather {
    backends: Arc<Backends>,
    /// Made on first use of `blocking` fan-out.
    sync_client: OnceLock<Arc<SyncClient>>,
}

impl Gather {
    pub fn new(backends: Arc<Backends>) -> Self {
        Self {
            backends,
            sync_client: OnceLock::new(),
        }
    }

    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// Each target backend's result, in completion order. Call it inside the call's server span:
    /// the backend calls' spans hang under it, even when a stream is polled outside it, and it
    /// stays open until the last backend has answered.
    ///
    /// `reservations` are the door's, one per target (see `crate::admission`): each is held
    /// until its backend's part ends.
    pub fn results(
        &self,
        plan: Arc<Plan>,
        reservations: Vec<Option<Reservation>>,
    ) -> BoxStream<'static, BackendResult> {
        let backends = self.backends.clone();
        let parent = tracing::Span::current();
        let parts: Vec<(usize, Option<Reservation>)> = plan
            .targets
            .iter()
            .copied()
            .zip(
                reservations
                    .into_iter()
                    .chain(std::iter::repeat_with(|| None)),
            )
            .collect();
        match plan.fanout {
            Fanout::Concurrent | Fanout::Unspecified => parts
                .into_iter()
                .map(|(i, reservation)| {
                    let (backends, plan) = (backends.clone(), plan.clone());
                    async move {
                        let result = call_backend(backends.get(i), &plan).await;
                        drop(reservation);
                        result
                    }
                    .instrument(parent.clone())
                })
                .collect::<FuturesUnordered<_>>()
                .boxed(),
            Fanout::Sequential => stream::iter(parts)
                .then(move |(i, reservation)| {
                    let (backends, plan) = (backends.clone(), plan.clone());
                    async move {
                        let result = call_backend(backends.get(i), &plan).await;
                        drop(reservation);
                        result
                    }
                    .instrument(parent.clone())
                })
                .boxed(),
            Fanout::Blocking => {
                let sync = self
                    .sync_client
                    .get_or_init(|| Arc::new(SyncClient::new(&self.backends)))
                    .clone();
                stream::iter(parts)
                    .map(move |(i, reservation)| {
                        let result = sync.call_blocking(&plan, i, &parent);
                        drop(reservation);
                        result
                    })
                    .boxed()
            }
        }
    }
}

/// Calls one backend for `plan` through its stack; never fails: a failure is the result's
/// `failure`. Traced as a `backend` span (a child of the current span) over one `attempt` span
/// per attempt.
pub async fn call_backend(backend: &Backend, plan: &Plan) -> BackendResult {
    let span = tracing::info_span!(
        "backend",
        otel.name = format!("backend {}", backend.name),
        backend = backend.name,
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
        from_cache = tracing::field::Empty,
    );
    let req = Call::new(
        FetchRequest {
            query: plan.query.clone(),
            delay_ms: plan.delay_ms,
            fail: plan.fail,
            mode: plan.mode.map(Into::into),
        },
        plan.deadline,
        plan.attempt_timeout,
    )
    .cacheable(plan.use_cache)
    .hedge_delay(plan.hedge_after);
    let answer = backend.call(req).instrument(span.clone()).await;
    let result = match answer {
        Ok(answered) => {
            span.record("outcome", "OK");
            BackendResult {
                hedged: answered.hedged,
                winner: answered.winner,
                ..result(
                    backend,
                    plan,
                    Outcome::Reply(answered.reply),
                    answered.attempts,
                    answered.from_cache,
                )
            }
        }
        Err(failed) => {
            let failure = failed.to_failure(&backend.name);
            span.record("outcome", failure.code_name.as_str());
            propagation::set_error(&span, failure.message.clone());
            BackendResult {
                hedged: failed.hedged,
                ..result(
                    backend,
                    plan,
                    Outcome::Failure(failure),
                    failed.attempts,
                    false,
                )
            }
        }
    };
    span.record("attempts", result.attempts);
    span.record("from_cache", result.from_cache);
    result
}

/// A backend's result for a plan that could not call it at all.
fn not_called(backend: &Backend, plan: &Plan, error: CallError) -> BackendResult {
    let failed = Failed {
        error,
        attempts: 0,
        stopped: None,
        hedged: false,
    };
    let failure = failed.to_failure(&backend.name);
    result(backend, plan, Outcome::Failure(failure), 0, false)
}

fn result(
    backend: &Backend,
    plan: &Plan,
    outcome: Outcome,
    attempts: u32,
    from_cache: bool,
) -> BackendResult {
    let code = match &outcome {
        Outcome::Reply(_) => 0,
        Outcome::Failure(f) => usize::try_from(f.code).unwrap_or(2).min(16),
    };
    StackCounters::bump(&backend.counters().results[code]);
    BackendResult {
        backend: backend.name.clone(),
        outcome: Some(outcome),
        attempts,
        latency_ms: plan.started.elapsed().as_secs_f64() * 1e3,
        from_cache,
        hedged: false,
        winner: 0,
    }
}

/// The "synchronous client" of `blocking` fan-out: its own channels on its own small runtime.
#[derive(Debug)]
struct SyncClient {
    /// `None` only if the runtime could not be built (then every call fails with INTERNAL).
    runtime: Option<tokio::runtime::Runtime>,
    backends: Arc<Backends>,
}

impl SyncClient {
    fn new(async_backends: &Backends) -> Self {
        match runtime(2, "sync-client") {
            Ok(rt) => {
                let backends = {
                    let _in_runtime = rt.enter();
                    Arc::new(async_backends.reconnect_here())
                };
                Self {
                    runtime: Some(rt),
                    backends,
                }
            }
            Err(e) => {
                tracing::error!("cannot start the blocking fan-out's client runtime: {e}");
                Self {
                    runtime: None,
                    backends: Arc::new(async_backends.reconnect_here()),
                }
            }
        }
    }

    /// Calls backend `i` and blocks the calling thread until it answers; traced under `parent`.
    fn call_blocking(&self, plan: &Arc<Plan>, i: usize, parent: &tracing::Span) -> BackendResult {
        let Some(rt) = &self.runtime else {
            let err = CallError::Status(tonic::Status::internal("blocking fan-out is unavailable"));
            return not_called(self.backends.get(i), plan, err);
        };
        let (tx, rx) = mpsc::sync_channel(1);
        let (plan2, backends) = (plan.clone(), self.backends.clone());
        rt.spawn(
            async move {
                let _ = tx.send(call_backend(backends.get(i), &plan2).await);
            }
            .instrument(parent.clone()),
        );
        // ON PURPOSE: this blocks the async worker thread running this call.
        rx.recv().unwrap_or_else(|_| {
            let err = CallError::Status(tonic::Status::internal("the blocking call was dropped"));
            not_called(self.backends.get(i), plan, err)
        })
    }
}

impl Drop for SyncClient {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which panics inside async code; let it wind down instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Counts results into a `Summary`.
#[derive(Debug, Default)]
pub struct Tally(Summary);

impl Tally {
    pub fn add(&mut self, r: &BackendResult) {
        match &r.outcome {
            Some(Outcome::Reply(_)) => self.0.ok += 1,
            Some(Outcome::Failure(f)) if f.code == Code::DeadlineExceeded as i32 => {
                self.0.timed_out += 1
            }
            _ => self.0.failed += 1,
        }
    }

    pub fn finish(mut self, plan: &Plan) -> Summary {
        self.0.elapsed_ms = plan.started.elapsed().as_secs_f64() * 1e3;
        self.0
    }
}
