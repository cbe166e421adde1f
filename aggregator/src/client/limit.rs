//! How many calls one backend gets at once: a fixed `--backend-concurrency N`, or `auto`, a
//! limit that follows the backend's latency; and how long a call may wait for a slot.
//!
//! tower's `ConcurrencyLimit` waits for a permit in `poll_ready`, before it sees the request, so
//! it cannot bound a call's wait by that call's deadline, and its limit is fixed. Here the wait
//! is part of `call`: past `--queue-timeout` it fails fast with RESOURCE_EXHAUSTED naming the
//! limit (so overload sheds rather than queues), past the deadline with DEADLINE_EXCEEDED.
//!
//! **The adaptive limit** is AIMD on latency, a gradient in the manner of Netflix's
//! concurrency-limits and Envoy's adaptive concurrency filter. Answers are taken in intervals of
//! at least 100 ms, two no-load answer times and 5 answers; an interval's median answer time is
//! compared with the no-load latency. Within 40% of it (plus 1 ms of noise), the limit grows by
//! its square root, if it is in use (at least half of it taken at some point in the interval:
//! growing a limit that holds nobody back means nothing); above it for two intervals in a row,
//! the limit shrinks in proportion to the excess (by 30% at most each interval), in use or not:
//! the calls in flight are what the backend is queueing.
//!
//! **The no-load latency is measured, not inferred** (Envoy's minRTT): a probe pins the calls
//! in flight far below what the backend was taking (an eighth for the first probe, when nothing
//! is known; a quarter after six intervals in a row over the target; half for the periodic one,
//! every 10 s), waits until the calls in flight are down to that (calls sent before the probe
//! are answered first), and takes the median of the next interval as the no-load latency. Then
//! the limit goes back to where it was, or, when the probe found the backend itself slower (not
//! queueing), to where it was before the cuts that led to the probe. A probe of a busy backend
//! sheds for an interval or two: a few percent of the calls under a sustained overload. An
//! interval faster than the no-load latency lowers it at once: a faster answer proves the
//! backend can answer that fast, where a slower one may be a line.
//!
//! Why medians of intervals: a backend's latency has a spread of its own (a heavy tail,
//! replicas of different speeds), and compared with the single fastest answer that spread would
//! read as queueing; medians compare like with like. Why probes: the lowest interval median of
//! the last few seconds, used first, is polluted by a sustained overload (no interval is free of
//! queueing), so the no-load latency crept up, the limit grew to the new target, and the next
//! window crept up again: under 10x overload the limit ran to 159 against a backend that takes
//! 20, and admitted calls waited 7x its latency (a 90th percentile in place of the median ran
//! away the same way). Why two intervals: a shared machine's hiccup often lasts one. Why two
//! no-load answer times: the answers that judge a limit must be those of calls sent under it;
//! with shorter intervals the limit kept growing for an answer time after the backend began to
//! queue, and overshot (admitted calls' p99 2.8x the backend's latency under overload, against
//! 2.0x). Why a multiplicative cut: a backend that falls behind is queueing now, and cutting by
//! up to 30% an interval sheds within a second where Vegas' one-step moves take many; growing by
//! the square root finds a limit of a few hundred in a couple of seconds. A backend whose
//! latency really doubled is cut back at first, then probed after six intervals over the
//! target, found slower, and given back its limit: about 3 s in `loadgen overload`
//! (BENCHMARKS.md §9). Why 40%: at 50% the limit mostly sat where admitted calls took 1.8x
//! the backend's latency at the median, at 40% mostly 1.1x (single runs, outliers both ways);
//! the tail was the same (a call that waits for a slot at a backend that takes a fixed number
//! at once waits up to one whole answer time).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use fanout_proto::limits::MIN_TIMEOUT;
use futures::future::{BoxFuture, FutureExt};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::Bounded;
use super::error::{CallError, Phase};

/// `--backend-concurrency`: a fixed number of calls in flight at one backend, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Fixed(usize),
    Auto,
}

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(auto_or_count(s, MAX_LIMIT)?.map_or(Limit::Auto, Limit::Fixed))
    }
}

/// A flag that is `auto` (`None`) or a number of calls from 1 to `max`.
pub(crate) fn auto_or_count(s: &str, max: usize) -> Result<Option<usize>, String> {
    match s.trim() {
        "auto" => Ok(None),
        n => match n.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "`{s}` is neither `auto` nor a number of calls from 1 to {max}"
            )),
        },
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Fixed(n) => write!(f, "{n}"),
            Limit::Auto => f.write_str("auto"),
        }
    }
}

/// The highest limit, fixed or adaptive.
pub const MAX_LIMIT: usize = 100_000;
/// Where an adaptive limit starts (the old fixed default: a fresh aggregator takes a burst; the
/// limit halves every 100 ms at most while the backend says it is too much), and the most it
/// goes to.
const START: f64 = 100.0;
const AUTO_MAX: f64 = 1_000.0;
/// An adaptive limit never goes below this: enough to keep measuring.
const MIN_AUTO: f64 = 2.0;
/// The wait for a slot under an adaptive limit, unless `--queue-timeout` says otherwise.
pub const AUTO_QUEUE_TIMEOUT: Duration = Duration::from_millis(20);
const INTERVAL: Duration = Duration::from_millis(100);
/// An interval ends with at least this many answers, and keeps at most this many.
const MIN_ANSWERS: usize = 5;
const MAX_ANSWERS: usize = 4096;
const TOLERANCE: f64 = 1.4;
const NOISE: Duration = Duration::from_millis(1);
/// The no-load latency is measured again this often...
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// ...and after this many intervals in a row over the target (queueing that cuts do not
/// drain, or a backend that really slowed down).
const PROBE_AFTER: u32 = 6;
/// A probe waits at most this many intervals for the line to drain.
const DRAIN_INTERVALS: u32 = 20;

/// One backend's slots, shared by every runtime that calls it.
#[derive(Debug)]
pub struct Limiter {
    backend: Arc<str>,
    slots: Arc<Semaphore>,
    /// The limit now.
    limit: AtomicUsize,
    /// Slots to take out of circulation as calls end, after the limit fell below the calls in
    /// flight.
    owed: AtomicUsize,
    /// How long a call may wait for a slot; `None`: until its deadline.
    queue_timeout: Option<Duration>,
    adaptive: Option<Mutex<Gradient>>,
    pub in_flight: AtomicU64,
    /// Calls waiting for a slot now.
    pub queued: AtomicU64,
    /// Calls that gave up waiting after `--queue-timeout`.
    pub over_limit: AtomicU64,
}

impl Limiter {
    pub fn new(backend: Arc<str>, limit: Limit, queue_timeout: Option<Duration>) -> Self {
        let (start, adaptive, queue_timeout) = match limit {
            Limit::Fixed(n) => (n, None, queue_timeout),
            Limit::Auto => (
                START as usize,
                Some(Mutex::new(Gradient::new())),
                Some(queue_timeout.unwrap_or(AUTO_QUEUE_TIMEOUT)),
            ),
        };
        Limiter {
            backend,
            slots: Arc::new(Semaphore::new(start)),
            limit: AtomicUsize::new(start),
            owed: AtomicUsize::new(0),
            queue_timeout,
            adaptive,
            in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    pub fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Waits for a slot: at most `--queue-timeout` (RESOURCE_EXHAUSTED), and never past
    /// `deadline` (DEADLINE_EXCEEDED).
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Slot, CallError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let asked = Instant::now();
                let until = match self.queue_timeout {
                    Some(q) => deadline.min(asked + q),
                    None => deadline,
                };
                self.queued.fetch_add(1, Relaxed);
                let got = tokio::time::timeout_at(until, self.slots.clone().acquire_owned()).await;
                self.queued.fetch_sub(1, Relaxed);
                match got {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return Err(CallError::Status(tonic::Status::unavailable(
                            "shutting down",
                        )));
                    }
                    Err(_) if until < deadline => {
                        self.over_limit.fetch_add(1, Relaxed);
                        return Err(CallError::OverLimit {
                            limit: self.limit(),
                            adaptive: self.is_adaptive(),
                            waited: asked.elapsed(),
                        });
                    }
                    Err(_) => {
                        return Err(CallError::NoSlot {
                            limit: self.limit(),
                        });
                    }
                }
            }
        };
        let in_flight = self.in_flight.fetch_add(1, Relaxed) + 1;
        Ok(Slot {
            limiter: self.clone(),
            permit: Some(permit),
            started: Instant::now(),
            in_flight,
        })
    }

    /// Sets the limit to `new`: more slots at once, fewer as calls end.
    fn set(&self, new: usize) {
        let old = self.limit.swap(new, Relaxed);
        if new > old {
            let mut more = new - old;
            // Pay back slots still owed first.
            while more > 0 {
                let owed = self.owed.load(Relaxed);
                if owed == 0 {
                    break;
                }
                let pay = owed.min(more);
                if self
                    .owed
                    .compare_exchange(owed, owed - pay, Relaxed, Relaxed)
                    .is_ok()
                {
                    more -= pay;
                }
            }
            self.slots.add_permits(more);
        } else if new < old {
            let fewer = old - new;
            let taken = self.slots.forget_permits(fewer);
            self.owed.fetch_add(fewer - taken, Relaxed);
        }
    }

    /// One answered call's time, for the adaptive limit.
    fn answered(&self, took: Duration, in_flight: u64) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let mut g = adaptive.lock().unwrap_or_else(|p| p.into_inner());
        let Some(new) = g.sample(took, in_flight as usize, self.limit()) else {
            return;
        };
        let logged = g.logged;
        if new * 2 <= logged || new >= logged * 2 {
            g.logged = new;
            tracing::info!(
                backend = &*self.backend,
                from = logged,
                to = new,
                no_load_ms = g.floor().as_secs_f64() * 1e3,
                "adaptive concurrency limit moved"
            );
        }
        drop(g);
        self.set(new);
    }
}

/// A slot at a backend, held while a call is there.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
    /// Calls in flight at the backend when this one started, itself included.
    in_flight: u64,
}

impl Slot {
    /// The call answered: its time feeds the adaptive limit.
    pub fn answered(self) {
        self.limiter
            .answered(self.started.elapsed(), self.in_flight);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Relaxed);
        let Some(permit) = self.permit.take() else {
            return;
        };
        // A slot the limit no longer has goes out of circulation.
        let owed = &self.limiter.owed;
        let mut n = owed.load(Relaxed);
        while n > 0 {
            match owed.compare_exchange(n, n - 1, Relaxed, Relaxed) {
                Ok(_) => {
                    permit.forget();
                    return;
                }
                Err(now) => n = now,
            }
        }
    }
}

/// The adaptive limit's state: see the module docs.
#[derive(Debug)]
struct Gradient {
    limit: f64,
    /// The no-load latency: the median answer time of the last probe (`MAX` before the first
    /// interval).
    floor: Duration,
    /// This interval's answer times.
    answers: Vec<Duration>,
    peak: usize,
    /// Intervals in a row whose median was over the target, and the limit before them.
    over: u32,
    before_over: f64,
    interval_start: Instant,
    /// When the next periodic probe starts.
    next_probe: Instant,
    probe: Probe,
    /// The limit last logged.
    logged: usize,
}

/// Where a probe of the no-load latency stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Probe {
    Off,
    /// The limit is pinned low while the backend's line drains (for at most `left` more
    /// intervals). `saved` is the limit to go back to; `before`, the limit before the cuts
    /// that led to the probe, if any: the one to go back to if the no-load latency itself
    /// rose (the cuts were for a slower backend, not for a line).
    Draining {
        saved: f64,
        before: f64,
        left: u32,
    },
    /// Pinned low for one more interval, whose median becomes the no-load latency.
    Measuring {
        saved: f64,
        before: f64,
    },
}

impl Gradient {
    fn new() -> Self {
        let now = Instant::now();
        Gradient {
            limit: START,
            floor: Duration::MAX,
            answers: Vec::new(),
            peak: 0,
            over: 0,
            before_over: START,
            interval_start: now,
            next_probe: now,
            probe: Probe::Off,
            logged: START as usize,
        }
    }

    /// The no-load latency, as last measured.
    fn floor(&self) -> Duration {
        self.floor
    }

    /// Takes one answer's time; at the end of an interval, the new limit.
    fn sample(&mut self, took: Duration, in_flight: usize, limit: usize) -> Option<usize> {
        if self.answers.len() < MAX_ANSWERS {
            self.answers.push(took);
        }
        self.peak = self.peak.max(in_flight);
        let now = Instant::now();
        // An interval lasts at least two no-load answer times: the answers that judge a limit
        // are those of calls sent under it.
        let interval = match self.floor {
            Duration::MAX => INTERVAL,
            floor => INTERVAL.max(floor * 2),
        };
        if now - self.interval_start < interval || self.answers.len() < MIN_ANSWERS {
            return None;
        }
        let mid = self.answers.len() / 2;
        let median = *self.answers.select_nth_unstable(mid).1;
        self.limit = limit as f64;
        match self.probe {
            Probe::Draining {
                saved,
                before,
                left,
            } => {
                // Drained once no more calls were in flight than the pinned limit lets in
                // (calls sent before the probe are answered first), or out of patience.
                self.probe = if self.peak <= limit || left == 0 {
                    Probe::Measuring { saved, before }
                } else {
                    Probe::Draining {
                        saved,
                        before,
                        left: left - 1,
                    }
                };
            }
            Probe::Measuring { saved, before } => {
                let slower = median > self.floor.mul_f64(TOLERANCE) + NOISE;
                self.floor = median;
                self.limit = if slower { saved.max(before) } else { saved };
                self.probe = Probe::Off;
                self.over = 0;
                self.next_probe = now + PROBE_EVERY;
            }
            Probe::Off => {
                let first = self.floor == Duration::MAX;
                // A first guess, until the probe this starts measures it; and a faster interval
                // than the no-load latency proves that latency lower (a backend that got
                // faster), where a slower one proves nothing.
                self.floor = self.floor.min(median);
                let target = self.floor.mul_f64(TOLERANCE) + NOISE;
                let in_use = self.peak * 2 >= limit;
                if median <= target {
                    self.over = 0;
                    self.before_over = self.limit;
                    if in_use {
                        self.limit += self.limit.sqrt().max(1.0);
                    }
                } else {
                    self.over += 1;
                    if self.over >= 2 {
                        let ratio = target.as_secs_f64() / median.as_secs_f64();
                        self.limit *= ratio.max(0.7);
                    }
                }
                // How far to pin the calls in flight down for a probe: nothing is known yet
                // (the first interval may have been queueing already), cuts have not drained
                // the line, or just the periodic check.
                let share = if first {
                    8.0
                } else if self.over >= PROBE_AFTER {
                    4.0
                } else if now >= self.next_probe {
                    2.0
                } else {
                    0.0
                };
                if share > 0.0 {
                    let saved = self.limit.clamp(MIN_AUTO, AUTO_MAX);
                    let before = if self.over >= PROBE_AFTER {
                        self.before_over
                    } else {
                        saved
                    };
                    // Of what is in flight, not of the limit: a limit above the calls in
                    // flight holds nobody back, and halving it drains nothing.
                    let busy = (self.peak as f64).clamp(MIN_AUTO, saved);
                    self.limit = busy / share;
                    self.probe = Probe::Draining {
                        saved,
                        before,
                        left: DRAIN_INTERVALS,
                    };
                }
            }
        }
        self.limit = self.limit.clamp(MIN_AUTO, AUTO_MAX);
        self.answers.clear();
        self.peak = 0;
        self.interval_start = now;
        Some(self.limit.round() as usize)
    }
}

/// Makes [`ConcurrencyLimit`]s over one backend's [`Limiter`].
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    limiter: Arc<Limiter>,
}

impl ConcurrencyLimitLayer {
    pub fn new(limiter: Arc<Limiter>) -> Self {
        ConcurrencyLimitLayer { limiter }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, M> Service<Bounded<M>> for ConcurrencyLimit<S>
where
    S: Service<Bounded<M>, Error = CallError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    M: Send + 'static,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<S::Response, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        // The inner service is made ready once a slot is held, in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Bounded<M>) -> Self::Future {
        let (limiter, inner) = (self.limiter.clone(), self.inner.clone());
        async move {
            let asked = Instant::now();
            let slot = limiter.acquire(req.deadline).await?;
            let waited = asked.elapsed();
            if !waited.is_zero() {
                tracing::Span::current().record("queued_ms", waited.as_secs_f64() * 1e3);
            }
            if req.left() < MIN_TIMEOUT {
                return Err(CallError::Deadline(Phase::WaitingForSlot));
            }
            let answer = inner.oneshot(req).await;
            if answer.is_ok() {
                slot.answered();
            }
            answer
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_auto_or_a_number() {
        assert_eq!("auto".parse(), Ok(Limit::Auto));
        assert_eq!("64".parse(), Ok(Limit::Fixed(64)));
        for bad in ["0", "-3", "lots", "100001"] {
            assert!(
                bad.parse::<Limit>().unwrap_err().contains("neither `auto`"),
                "{bad}"
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_gradient_grows_while_latency_holds_and_shrinks_when_it_rises() {
        let mut g = Gradient::new();
        let mut limit = START as usize;
        let step = |g: &mut Gradient, took_ms: u64, limit: usize| {
            let mut new = None;
            for _ in 0..20 {
                new = g
                    .sample(Duration::from_millis(took_ms), limit, limit)
                    .or(new);
            }
            new
        };
        // Paused time: advance an interval between batches (two answer times of 100 ms).
        for _ in 0..10 {
            tokio::time::advance(INTERVAL * 2).await;
            if let Some(new) = step(&mut g, 100, limit) {
                limit = new;
            }
        }
        assert!(
            limit > 120,
            "latency held at its floor, in use: it grew, to {limit}"
        );
        let grown = limit;
        // Latency triples from queueing: cut back hard (after two intervals of it).
        for _ in 0..5 {
            tokio::time::advance(INTERVAL * 2).await;
            if let Some(new) = step(&mut g, 300, limit) {
                limit = new;
            }
        }
        assert!(limit < grown / 2, "from {grown} to {limit}");
        assert!(limit >= 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spread_of_latencies_is_not_taken_for_queueing() {
        // A heavy tail and replicas of different speeds: answers of 5 to 200 ms, every interval
        // alike. Nothing queues, so the limit must not fall.
        let mut g = Gradient::new();
        let mut limit = START as usize;
        for _ in 0..30 {
            tokio::time::advance(INTERVAL).await;
            for i in 0..50u64 {
                let took = Duration::from_millis(if i % 10 == 0 { 200 } else { 5 + i % 7 });
                if let Some(new) = g.sample(took, limit, limit) {
                    limit = new;
                }
            }
        }
        assert!(limit >= START as usize, "a spread cut the limit to {limit}");
    }

    #[tokio::test]
    async fn a_shrinking_limit_takes_slots_back_as_calls_end() {
        let l = Arc::new(Limiter::new(
            "b".into(),
            Limit::Fixed(4),
            Some(Duration::from_millis(5)),
        ));
        let far = Instant::now() + Duration::from_secs(5);
        let slots: Vec<Slot> = futures::future::join_all((0..4).map(|_| l.acquire(far)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        l.set(2);
        drop(slots);
        // Two slots now, whatever the four calls that held them did.
        let a = l.acquire(far).await.unwrap();
        let b = l.acquire(far).await.unwrap();
        let refused = l.acquire(far).await.unwrap_err();
        assert!(
            matches!(refused, CallError::OverLimit { limit: 2, .. }),
            "{refused:?}"
        );
        drop((a, b));
        l.set(3);
        let held: Vec<Slot> = futures::future::join_all((0..3).map(|_| l.acquire(far)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(held.len(), 3);
    }
}
