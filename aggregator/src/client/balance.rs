//! Spreads a backend's calls over its replicas: power of two choices weighing answer time by
//! calls in flight (peak-EWMA, see [`Replicas::pick`]), each endpoint with its own lazily
//! connected channel ([`Fetch`]), outcomes counted for ejection and for knowing an endpoint
//! down, and the endpoint named in the attempt's span. When every endpoint is known down, the
//! call fails fast ([`CallError::Down`]) instead of waiting for one.
//!
//! Why not tower's `Balance`: it chooses in `poll_ready`, before it sees the request, so a
//! retry cannot ask for an endpoint other than the one that just failed (and a hedge cannot ask
//! for one other than the first attempt's); and it needs a `Buffer` in front to be shared. The
//! choice itself is a few lines ([`Replicas::pick`]): policy, not protocol.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use fanout_proto::v1::{FetchReply, FetchRequest};
use fanout_tls::ClientTls;
use futures::future::{BoxFuture, FutureExt};
use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Service, ServiceExt};

use super::call::{Call, Deadline, Param, Tried};
use super::error::CallError;
use super::fetch::{Fetch, Keepalive};
use super::replicas::{Pick, Replica, Replicas, Verdict};

/// One runtime's client of a backend's replicas.
#[derive(Debug, Clone)]
pub struct Balance {
    replicas: Arc<Replicas>,
    keepalive: Keepalive,
    /// For `https://` endpoints.
    tls: ClientTls,
    /// This runtime's channel to each endpoint, by replica id.
    clients: Arc<Mutex<HashMap<u64, Fetch>>>,
}

impl Balance {
    /// Must be called within the runtime the channels should live on.
    pub fn new(replicas: Arc<Replicas>, keepalive: Keepalive, tls: ClientTls) -> Self {
        Balance {
            replicas,
            keepalive,
            tls,
            clients: Arc::default(),
        }
    }

    /// This runtime's client of `r`, made on first use; clients of replicas that left the set
    /// are dropped on the way (their calls in flight hold their own clones).
    fn client(&self, r: &Replica) -> Result<Fetch, CallError> {
        let mut clients = self.clients.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = clients.get(&r.id) {
            return Ok(f.clone());
        }
        let current = self.replicas.current();
        clients.retain(|id, _| current.iter().any(|c| c.id == *id));
        let fetch = Fetch::connect(
            self.replicas.backend().clone(),
            &r.url,
            r.origin.as_deref(),
            self.keepalive,
            &self.tls,
        )
        .map_err(|e| CallError::Status(Status::internal(format!("endpoint {}: {e}", r.addr))))?;
        clients.insert(r.id, fetch.clone());
        Ok(fetch)
    }
}

/// How an attempt's outcome counts for the endpoint's health.
fn verdict<T>(outcome: &Result<T, CallError>) -> Verdict {
    match outcome {
        Ok(_) => Verdict::Answered,
        Err(CallError::Unreachable(_)) => Verdict::Unreachable { connection: true },
        Err(CallError::Status(s)) if s.code() == Code::Unavailable => {
            Verdict::Unreachable { connection: false }
        }
        // tonic's own timer (the grpc-timeout we sent ran out here first): no answer.
        Err(CallError::Status(s)) if s.code() == Code::Cancelled => Verdict::GivenUp,
        Err(CallError::Status(_)) => Verdict::Answered,
        Err(_) => Verdict::Unknown,
    }
}

/// Keeps an endpoint's in-flight count while a call is on it, however the call ends, and
/// counts a call dropped before its outcome: given up on when its time was up (the attempt
/// timeout above fired: no answer in time), unknown when the caller went away before.
struct InFlight {
    replicas: Arc<Replicas>,
    replica: Arc<Replica>,
    /// The attempt's deadline (the layers above narrow the request's to the attempt's).
    deadline: Instant,
    /// When the call went to the endpoint, for its answer time.
    started: Instant,
    settled: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.replica.in_flight.fetch_sub(1, Relaxed);
        if !self.settled {
            // The timeout fires at the deadline; allow for the timer's granularity.
            let timed_out = Instant::now() + Duration::from_millis(2) >= self.deadline;
            let verdict = if timed_out {
                Verdict::GivenUp
            } else {
                Verdict::Unknown
            };
            self.replicas
                .record(&self.replica, verdict, self.started.elapsed());
        }
    }
}

impl Service<Call<FetchRequest>> for Balance {
    type Response = FetchReply;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<FetchReply, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Call<FetchRequest>) -> Self::Future {
        let this = self.clone();
        let (tried, Deadline(deadline)): (Tried, _) = (req.param(), req.param());
        async move {
            this.replicas.resolved().await;
            let replica = match this.replicas.pick(&tried.ids()) {
                Pick::Endpoint(replica) => replica,
                Pick::AllDown(why) => return Err(CallError::Down(why)),
                Pick::None => {
                    return Err(CallError::Status(Status::unavailable(
                        this.replicas.no_endpoint(),
                    )));
                }
            };
            tried.note(replica.id);
            tracing::Span::current().record("endpoint", replica.addr.as_str());
            let fetch = this.client(&replica)?;
            replica.in_flight.fetch_add(1, Relaxed);
            let mut in_flight = InFlight {
                replicas: this.replicas.clone(),
                replica: replica.clone(),
                deadline,
                started: Instant::now(),
                settled: false,
            };
            let outcome = fetch.oneshot(req).await;
            in_flight.settled = true;
            if let Err(CallError::Unreachable(status)) = &outcome {
                replica.note_unreachable(status.message());
            }
            this.replicas
                .record(&replica, verdict(&outcome), in_flight.started.elapsed());
            outcome
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
