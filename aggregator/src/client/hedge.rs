//! Hedged requests ("The Tail at Scale", Dean and Barroso): when a backend has not answered
//! after a delay, send the same request again (to another replica when there is one) and take
//! whichever answer comes first; the other attempt is cancelled. A tail that one attempt in fifty
//! meets is then met only when both are slow.
//!
//! The delay is fixed (`--hedge-after 20ms`) or follows the backend: `--hedge-after p95` hedges
//! once an attempt has taken longer than 95% of this backend's recent successful attempts (a
//! rolling histogram over the last 10 to 20 s, never below 1 ms, and no hedging before it holds
//! 20 answers). At most `--max-hedges` per try, and a budget like the retry budget
//! (`--hedge-budget`, 5% of calls plus 1 a second by default) keeps a backend that is slow for
//! everyone from being sent twice the load. Off by default: a hedge is only safe for a call that
//! may run twice (Fetch may).
//!
//! tower has a `Hedge` layer; it hedges at a latency percentile only, at most once, and cannot
//! take a per-request delay (`hedge_after_ms`) or a fixed one: this is the same idea in our
//! stack's types.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use fanout_proto::limits::MIN_TIMEOUT;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};
use hdrhistogram::Histogram;
use tokio::time::Instant;
use tower::retry::budget::{Budget, TpsBudget};
use tower::{Layer, Service, ServiceExt};

use super::call::{Deadline, HedgeDelay, IsHedge, Param, SetParam, Try};
use super::error::Failed;
use super::retry::BUDGET_WINDOW;
use super::{Answered, StackCounters};

/// When to hedge, from `--hedge-after`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HedgeAfter {
    /// After this long without an answer.
    Fixed(Duration),
    /// After this percentile (0 < p < 100) of the backend's recent successful attempts.
    Percentile(f64),
}

impl FromStr for HedgeAfter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix('p') {
            return match p.parse::<f64>() {
                Ok(p) if p > 0.0 && p < 100.0 => Ok(HedgeAfter::Percentile(p)),
                _ => Err(format!(
                    "`{s}` is not a percentile: write p50 to p99.9 (above 0, below 100), e.g. `p95`"
                )),
            };
        }
        match fanout_proto::cli::duration(s) {
            Ok(d) if !d.is_zero() && d <= Duration::from_secs(600) => Ok(HedgeAfter::Fixed(d)),
            Ok(_) => Err(format!(
                "`{s}` is out of range: a hedge delay from 1ms to 10 minutes"
            )),
            Err(_) => Err(format!(
                "`{s}` is neither a duration (`20ms`) nor a percentile of the backend's latency (`p95`)"
            )),
        }
    }
}

impl fmt::Display for HedgeAfter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HedgeAfter::Fixed(d) => write!(f, "{}", humantime::format_duration(*d)),
            HedgeAfter::Percentile(p) => write!(f, "p{p}"),
        }
    }
}

/// Hedging settings; plain data from the flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HedgePolicy {
    /// `None`: no hedging unless a request asks for it.
    pub after: Option<HedgeAfter>,
    /// Hedges per try at most.
    pub max_hedges: u32,
    /// Hedges allowed as a fraction of calls.
    pub budget_ratio: f32,
}

impl Default for HedgePolicy {
    fn default() -> Self {
        HedgePolicy {
            after: None,
            max_hedges: 1,
            budget_ratio: 0.05,
        }
    }
}

/// How many hedges a second the budget allows regardless of the ratio (it remembers calls as
/// long as the retry budget does, [`BUDGET_WINDOW`]).
const BUDGET_MIN_PER_SEC: u32 = 1;
/// A percentile delay needs this many answers first, and is never shorter than the floor.
const MIN_SAMPLES: u64 = 20;
const FLOOR: Duration = Duration::from_millis(1);
/// The rolling histogram keeps the last one to two of these.
const WINDOW: Duration = Duration::from_secs(10);

/// One backend's hedging state, shared by every runtime that calls it.
#[derive(Debug)]
pub struct Hedging {
    policy: HedgePolicy,
    budget: TpsBudget,
    latencies: Mutex<Rolling>,
    counters: Arc<StackCounters>,
}

impl Hedging {
    pub fn new(policy: HedgePolicy, counters: Arc<StackCounters>) -> Self {
        Hedging {
            budget: TpsBudget::new(BUDGET_WINDOW, BUDGET_MIN_PER_SEC, policy.budget_ratio),
            policy,
            latencies: Mutex::new(Rolling::new()),
            counters,
        }
    }

    /// The delay before a hedge, if it is to be hedged: the request's own, else the policy's.
    fn delay(&self, HedgeDelay(own): HedgeDelay) -> Option<Duration> {
        match own {
            Some(d) if d.is_zero() => None,
            Some(d) => Some(d),
            None => match self.policy.after? {
                HedgeAfter::Fixed(d) => Some(d),
                HedgeAfter::Percentile(p) => self
                    .latencies
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .percentile(p)
                    .map(|d| d.max(FLOOR)),
            },
        }
    }

    fn record(&self, took: Duration) {
        self.latencies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .record(took);
    }
}

/// Latencies of the last one to two windows: two histograms, the older dropped at each turn.
#[derive(Debug)]
struct Rolling {
    current: Histogram<u64>,
    previous: Histogram<u64>,
    turned: Instant,
}

impl Rolling {
    fn new() -> Self {
        let h = || Histogram::new_with_bounds(1, 600_000_000, 2).expect("valid histogram bounds");
        Rolling {
            current: h(),
            previous: h(),
            turned: Instant::now(),
        }
    }

    fn turn(&mut self) {
        if self.turned.elapsed() >= WINDOW {
            std::mem::swap(&mut self.current, &mut self.previous);
            self.current.reset();
            self.turned = Instant::now();
        }
    }

    fn record(&mut self, took: Duration) {
        self.turn();
        let _ = self.current.record((took.as_micros() as u64).max(1));
    }

    fn percentile(&mut self, p: f64) -> Option<Duration> {
        self.turn();
        let mut both = self.previous.clone();
        both.add(&self.current).ok()?;
        (both.len() >= MIN_SAMPLES)
            .then(|| Duration::from_micros(both.value_at_quantile(p / 100.0)))
    }
}

/// Makes [`Hedge`]s.
#[derive(Debug, Clone)]
pub struct HedgeLayer {
    hedging: Arc<Hedging>,
}

impl HedgeLayer {
    pub fn new(hedging: Arc<Hedging>) -> Self {
        HedgeLayer { hedging }
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;
    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            hedging: self.hedging.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Hedge<S> {
    inner: S,
    hedging: Arc<Hedging>,
}

impl<S, Req, R> Service<Req> for Hedge<S>
where
    Req: Param<Try> + Param<HedgeDelay> + Param<Deadline> + SetParam<IsHedge>,
    Req: Clone + Send + 'static,
    S: Service<Req, Response = Answered<R>, Error = Failed> + Clone + Send + 'static,
    S::Future: Send,
    R: Send + 'static,
{
    type Response = Answered<R>;
    type Error = Failed;
    type Future = BoxFuture<'static, Result<Answered<R>, Failed>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (inner, hedging) = (self.inner.clone(), self.hedging.clone());
        // A call deposits once, on its first try.
        if Param::<Try>::param(&req).number == 1 {
            hedging.budget.deposit();
        }
        let deadline: Deadline = req.param();
        let Some(delay) = hedging.delay(req.param()) else {
            return timed(inner, req, hedging).boxed();
        };
        async move {
            let mut running = FuturesUnordered::new();
            // Each attempt out, tagged with whether it is a hedge (an attempt's number counts the
            // retries of the call too, so a number alone cannot say).
            running.push(
                timed(inner.clone(), req.clone(), hedging.clone())
                    .map(|r| (false, r))
                    .boxed(),
            );
            let mut hedges = 0;
            let mut next = Some(Instant::now() + delay);
            loop {
                let hedge_due = async {
                    match next {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    biased;
                    done = running.next() => match done {
                        Some((hedge, Ok(answer))) => {
                            if hedge {
                                StackCounters::bump(&hedging.counters.hedges_won);
                            }
                            // Dropping `running` cancels the attempts still out.
                            return Ok(Answered { hedged: hedges > 0, ..answer });
                        }
                        Some((_, Err(failed))) if running.is_empty() => {
                            return Err(Failed { hedged: hedges > 0, ..failed });
                        }
                        // Another attempt is still out: its answer may yet come.
                        Some((_, Err(_))) => {}
                        None => unreachable!("an attempt is always running until one ends the call"),
                    },
                    () = hedge_due => {
                        next = None;
                        if deadline.left() < MIN_TIMEOUT * 2 {
                            continue;
                        }
                        if !hedging.budget.withdraw() {
                            StackCounters::bump(&hedging.counters.hedges_refused);
                            continue;
                        }
                        hedges += 1;
                        StackCounters::bump(&hedging.counters.hedges);
                        let mut copy = req.clone();
                        copy.set_param(IsHedge(true));
                        running.push(timed(inner.clone(), copy, hedging.clone()).map(|r| (true, r)).boxed());
                        if hedges < hedging.policy.max_hedges {
                            next = Some(Instant::now() + delay);
                        }
                    }
                }
            }
        }
        .boxed()
    }
}

/// One attempt (first or hedge), its latency recorded when it answers.
async fn timed<S, Req, R>(inner: S, req: Req, hedging: Arc<Hedging>) -> Result<Answered<R>, Failed>
where
    S: Service<Req, Response = Answered<R>, Error = Failed>,
{
    let started = Instant::now();
    let answer = inner.oneshot(req).await?;
    hedging.record(started.elapsed());
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hedge_after_reads_durations_and_percentiles() {
        assert_eq!(
            "20ms".parse(),
            Ok(HedgeAfter::Fixed(Duration::from_millis(20)))
        );
        assert_eq!("p95".parse(), Ok(HedgeAfter::Percentile(95.0)));
        assert_eq!("p99.9".parse(), Ok(HedgeAfter::Percentile(99.9)));
        for (bad, want) in [
            ("p0", "not a percentile"),
            ("p100", "not a percentile"),
            ("p-5", "not a percentile"),
            ("pfast", "not a percentile"),
            ("0ms", "out of range"),
            ("-5ms", "neither a duration"),
            ("soon", "neither a duration"),
        ] {
            let err = bad.parse::<HedgeAfter>().unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }

    #[test]
    fn the_rolling_percentile_needs_enough_answers() {
        let mut r = Rolling::new();
        for _ in 0..10 {
            r.record(Duration::from_millis(10));
        }
        assert_eq!(r.percentile(95.0), None);
        for i in 0..90 {
            r.record(Duration::from_millis(if i < 85 { 10 } else { 500 }));
        }
        let p50 = r.percentile(50.0).unwrap();
        let p99 = r.percentile(99.0).unwrap();
        assert!(
            p50 < Duration::from_millis(11) && p99 > Duration::from_millis(400),
            "{p50:?} {p99:?}"
        );
    }
}

#[cfg(test)]
mod layer_tests;
