//! The aggregator's client for one backend: a tower stack over tonic's generated client, read
//! top to bottom in [`stack`].
//!
//! ```text
//! Cache          a cached reply answers at once: no attempt, no slot, no retry token
//!  Retry         tower's Retry with our policy: retryable codes, backoff with jitter that must
//!                fit the deadline, a per-backend budget
//!   Hedge        (when on) a second attempt if the first is slow; the first answer wins, the
//!                other is cancelled; a budget
//!    Attempt     one span per attempt (traceparent goes out under it), counted; no attempt
//!                starts without time for one
//!     Limit      per-backend concurrency, fixed or adaptive (open until the backend is
//!                overloaded); the wait for a slot is bounded by --queue-timeout and the deadline
//!      Timeout   one attempt's bound: the smaller of its own timeout and what the deadline leaves
//!       Balance  one of the backend's replicas, by power of two choices, preferring one this
//!                call has not tried; outcomes feed outlier ejection; a replica known down
//!                (unreachable or silent) takes no call, and when all are, the call fails at
//!                once while a health check finds one back
//!        Fetch   tonic's BackendClient over that replica's lazily connected Channel; the bound
//!                goes along as grpc-timeout
//! ```
//!
//! Everything above [`Balance`](balance::Balance) is generic over the request: each layer names
//! in its bounds the typed values it reads and sets ([`call`]: the deadline, the try, the
//! attempt's number, whether it is a hedge...), and a reply comes back as an [`Answered`] or a
//! [`Failed`]. The stack's own request type is [`Call`], which carries them all; a layer's unit
//! tests may send a type with only what that layer declares. Lift the layers into another tonic
//! service by writing its own `Fetch`.
//!
//! **Readiness.** Cache, retry, attempt and timeout pass `poll_ready` down; four layers are
//! always ready and do their waiting in `call`, for reasons that hold: Hedge (one request becomes
//! several, each made ready in turn through `oneshot`), Limit (a slot is held for one request and
//! bounded by that request's deadline, which `poll_ready` does not see), Balance (the endpoint is
//! picked per request, preferring those that request has not tried) and Fetch (tonic's client
//! waits for its channel in the call). So tower middleware that relies on `poll_ready` for
//! backpressure (tower's `ConcurrencyLimit`, `LoadShed`) belongs above the hedge, not below it.
//!
//! Dropping the future of a call drops every layer's future down to tonic's, which resets the
//! HTTP/2 stream: the backend sees the call cancelled.

pub mod attempt;
pub mod balance;
pub mod cache;
pub mod call;
pub mod error;
pub mod fetch;
pub mod hedge;
pub mod limit;
pub mod replicas;
pub mod retry;
pub mod silence;
#[cfg(test)]
mod testing;
pub mod timeout;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use fanout_proto::v1::{FetchReply, FetchRequest};
use fanout_server::metrics::{ByCode, Durations, rpc_labels};
use tower::ServiceBuilder;
use tower::retry::RetryLayer;
use tower::retry::budget::TpsBudget;
use tower::util::BoxCloneSyncService;

use self::attempt::AttemptLayer;
use self::cache::{Cache, CacheLayer};
pub use self::call::Call;
use self::error::Failed;
use self::hedge::{HedgeLayer, HedgePolicy, Hedging};
use self::limit::{ConcurrencyLimitLayer, Limit, Limiter};
use self::retry::{Retries, RetryPolicy};
use self::timeout::AttemptTimeoutLayer;

/// A reply, and how it was had.
#[derive(Debug, Clone)]
pub struct Answered<R> {
    pub reply: R,
    /// Attempts made (0 when the reply came from the cache).
    pub attempts: u32,
    pub from_cache: bool,
    /// The number of the attempt that answered ([`call::AttemptNumber`]; 0 from the cache).
    pub winner: u32,
    /// Whether a hedge was sent.
    pub hedged: bool,
}

/// The aggregator's cache: `Fetch` replies by backend name and query.
pub type ReplyCache = Cache<(Arc<str>, String), FetchReply>;

/// What one backend's stack counted since the aggregator started; the `Stats` RPC sums them.
#[derive(Debug, Default)]
pub struct StackCounters {
    /// Attempts made, first tries and retries.
    pub attempts: AtomicU64,
    /// Retries made.
    pub retries: AtomicU64,
    /// Retries the budget refused.
    pub retries_throttled: AtomicU64,
    /// Replies served from the cache, and lookups that found nothing.
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Hedges sent, won (answered first), and refused by the hedge budget.
    pub hedges: AtomicU64,
    pub hedges_won: AtomicU64,
    pub hedges_refused: AtomicU64,
    /// The backend's parts of calls, by the gRPC code each ended with (retries and hedges
    /// included: one count per part).
    pub results: [AtomicU64; 17],
}

impl StackCounters {
    pub(crate) fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}

/// What one backend's stack needs besides its tonic client; cheap to clone, and shared by every
/// runtime that calls the backend (the blocking fan-out has a runtime of its own), so that the
/// slots, the budget and the counts are the backend's, not one runtime's.
#[derive(Debug, Clone)]
pub struct StackState {
    pub name: Arc<str>,
    pub retry: RetryPolicy,
    /// This backend's retry budget: a backend that always fails spends its own, not the
    /// tokens another backend's retries need.
    pub budget: Arc<TpsBudget>,
    /// `--backend-concurrency`: this backend's slots, fixed or adaptive.
    pub limiter: Arc<Limiter>,
    pub counters: Arc<StackCounters>,
    /// The aggregator's cache (shared by all backends, keyed by backend and query), if on.
    pub cache: Option<ReplyCache>,
    /// This backend's hedging: its policy, budget and recent latencies.
    pub hedging: Arc<Hedging>,
    /// With metrics on: each attempt's duration by status (`rpc_client_call_duration_seconds`).
    pub attempt_durations: Option<Arc<ByCode>>,
}

impl StackState {
    pub fn new(
        name: &str,
        retry: RetryPolicy,
        hedge: HedgePolicy,
        limit: Limit,
        queue_timeout: Option<Duration>,
        cache: Option<ReplyCache>,
    ) -> Self {
        let counters: Arc<StackCounters> = Arc::default();
        let name: Arc<str> = name.into();
        StackState {
            limiter: Arc::new(Limiter::new(name.clone(), limit, queue_timeout)),
            name,
            budget: Arc::new(retry.budget()),
            retry,
            hedging: Arc::new(Hedging::new(hedge, counters.clone())),
            counters,
            cache,
            attempt_durations: None,
        }
    }

    /// Records each attempt's duration and status in `durations`, labelled with this backend.
    pub fn with_metrics(mut self, durations: Option<&Durations>) -> Self {
        self.attempt_durations = durations.map(|d| {
            let mut labels = vec![("backend", self.name.to_string())];
            labels.extend(rpc_labels(FETCH_PATH));
            Arc::new(d.by_code(labels))
        });
        self
    }
}

/// The method every attempt calls.
const FETCH_PATH: &str = "/fanout.v1.Backend/Fetch";

/// One backend's whole client, type-erased so every backend's is the same type.
pub type BackendStack = BoxCloneSyncService<Call<FetchRequest>, Answered<FetchReply>, Failed>;

/// Builds one backend's stack over `endpoints` (its [`Balance`](balance::Balance)). The order is
/// the design: see the module docs.
pub fn stack<S>(state: &StackState, endpoints: S) -> BackendStack
where
    S: tower::Service<Call<FetchRequest>, Response = FetchReply, Error = error::CallError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
{
    let cache = state.cache.clone().map(|cache| {
        let name = state.name.clone();
        CacheLayer::new(
            cache,
            move |call: &Call<FetchRequest>| (name.clone(), call.message.query.clone()),
            state.counters.clone(),
        )
    });
    let service = ServiceBuilder::new()
        // Outermost: a cached reply costs no attempt, no slot and no retry token, and is served
        // even when the deadline has passed.
        .option_layer(cache)
        // Retries wrap everything below, so each attempt waits for its own slot and gets its own
        // timeout and span; the policy refuses a retry whose backoff the deadline cannot fit.
        .layer(RetryLayer::new(Retries::new(state)))
        // Inside the retry, so a try is hedged and a failed hedged try retried; above the
        // attempt, so a hedge is an attempt of its own (span, slot, timeout, another replica).
        .layer(HedgeLayer::new(state.hedging.clone()))
        // Once per attempt: the span, the count, the check that time is left.
        .layer(AttemptLayer::new(
            state.counters.clone(),
            state.attempt_durations.clone(),
        ))
        // Above the timeout, so the wait for a slot is not charged to the attempt's own timeout
        // (a queue is not the backend being slow) but only to the call's deadline.
        .layer(ConcurrencyLimitLayer::new(state.limiter.clone()))
        // Innermost: the attempt's bound, which the deadline may shorten; it narrows the
        // deadline the client sends as grpc-timeout.
        .layer(AttemptTimeoutLayer)
        .service(endpoints);
    BoxCloneSyncService::new(service)
}
