//! The adaptive limit in simulated scenarios, each with the band its result must stay in (the
//! way Vector tests its adaptive request concurrency): an open loop of calls, a door that
//! refuses past an enforced limit, and a backend that works on `servers` calls at once in
//! arrival order, all in virtual time. Deterministic (seeded), and a run of a minute of
//! simulated time takes milliseconds.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use super::{Answer, Control, OPEN, Regime, Totals};

mod crates;
mod scenarios;

use self::scenarios::{HEALTHY, ms, scenario, seeds};

/// One call's work at time t; `None`: no answer ever.
type Work = Box<dyn Fn(Duration, &mut SmallRng) -> Option<Duration>>;

/// What limits the calls: ours, or a crate's algorithm (see [`crates`]).
trait Algo {
    /// One answered call.
    fn answer(&mut self, now: Instant, answer: Answer, totals: Totals) -> Option<String>;
    /// The calls in flight allowed now; `None`: none refused.
    fn limit(&self) -> Option<usize>;
    fn regime(&self) -> Regime;
}

impl Algo for Control {
    fn answer(&mut self, now: Instant, answer: Answer, totals: Totals) -> Option<String> {
        let d = self.observe(now, answer, totals)?;
        if std::env::var_os("SIM_TRACE").is_some() {
            eprintln!(
                "limit {} {:?} no-load {:?}",
                d.limit,
                d.regime,
                self.no_load()
            );
        }
        d.change.map(|c| format!("{c:?} limit {}", d.limit))
    }
    fn limit(&self) -> Option<usize> {
        (self.regime() == Regime::Overloaded).then(|| Control::limit(self))
    }
    fn regime(&self) -> Regime {
        Control::regime(self)
    }
}

/// A backend and the load on it.
struct Scenario {
    /// Calls worked on at once (the rest wait in line); `usize::MAX`: no limit.
    servers: usize,
    /// Calls per second offered at time t (Poisson arrivals).
    rate: Box<dyn Fn(Duration) -> f64>,
    /// One call's work at time t; `None`: no answer ever (silent), the call is given up after
    /// [`GIVE_UP`].
    work: Work,
    length: Duration,
    /// Counted from here on (earlier is settling).
    settle: Duration,
}

const GIVE_UP: Duration = Duration::from_secs(1);

/// What happened, counted from `from` on (earlier is settling).
#[derive(Default)]
struct Outcome {
    offered: u64,
    answered: u64,
    refused: u64,
    /// Answer times of the calls admitted, sorted.
    took: Vec<Duration>,
    /// The limit at each answer.
    limits: Vec<usize>,
    overloaded_ever: bool,
    regime_at_end: Option<Regime>,
    seconds: f64,
    /// Every change of regime or no-load time, with when (for a failing band's message).
    changes: Vec<String>,
}

impl std::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "offered {}, answered {}, refused {}, p50 {:?}, p99 {:?}, limit {:?}, changes {:?}",
            self.offered,
            self.answered,
            self.refused,
            self.percentile(0.5),
            self.percentile(0.99),
            self.limit_range(),
            self.changes
        )
    }
}

impl Outcome {
    fn goodput(&self) -> f64 {
        self.answered as f64 / self.seconds
    }
    fn percentile(&self, p: f64) -> Duration {
        if self.took.is_empty() {
            return Duration::ZERO;
        }
        self.took[((self.took.len() - 1) as f64 * p) as usize]
    }
    fn limit_range(&self) -> (usize, usize) {
        let min = self.limits.iter().copied().min().unwrap_or(OPEN);
        let max = self.limits.iter().copied().max().unwrap_or(OPEN);
        (min, max)
    }
}

/// Runs `s` through our [`Control`] with three seeds; counts from `s.settle`. A band must hold
/// for each.
fn runs(s: &Scenario) -> Vec<Outcome> {
    seeds()
        .into_iter()
        .map(|seed| run(s, seed, &|epoch| Box::new(Control::new(epoch))))
        .collect()
}

/// Runs `s` through the algorithm `make` makes; counts from `s.settle`.
fn run(s: &Scenario, seed: u64, make: &dyn Fn(Instant) -> Box<dyn Algo>) -> Outcome {
    let epoch = Instant::now();
    let algo = &mut *make(epoch);
    let from = s.settle;
    let mut rng = SmallRng::seed_from_u64(seed);
    // When each server is next free (fewer entries than `servers` while some were never used).
    let mut free: BinaryHeap<Reverse<Duration>> = BinaryHeap::new();
    // Calls at the backend: (ends at, started at, in flight when it started, answered).
    let mut out: BinaryHeap<Reverse<(Duration, Duration, usize, bool)>> = BinaryHeap::new();
    let mut totals = Totals::default();
    let mut o = Outcome::default();
    let mut t = Duration::ZERO;
    let mut limit = algo.limit().unwrap_or(OPEN);
    loop {
        let rate = (s.rate)(t);
        let gap = -(1.0 - rng.random::<f64>()).ln() / rate;
        t += Duration::from_secs_f64(gap);
        if t >= s.length {
            break;
        }
        // Every call that ends before this arrival, in order.
        while let Some(&Reverse((end, start, in_flight, answered))) = out.peek() {
            if end > t {
                break;
            }
            out.pop();
            totals.ended += 1;
            let took = end - start;
            if answered && start >= from {
                o.answered += 1;
                o.took.push(took);
                o.limits.push(limit);
            }
            let answer = Answer {
                took,
                in_flight,
                answered,
            };
            if let Some(change) = algo.answer(epoch + end, answer, totals) {
                o.changes
                    .push(format!("{:.2}s {change}", end.as_secs_f64()));
            }
            o.overloaded_ever |= start >= from && algo.regime() == Regime::Overloaded;
            limit = algo.limit().unwrap_or(OPEN);
        }
        let counted = t >= from;
        o.offered += counted as u64;
        if algo.limit().is_some_and(|limit| out.len() >= limit) {
            totals.refused += 1;
            o.refused += counted as u64;
            continue;
        }
        totals.started += 1;
        let in_flight = out.len() + 1;
        let (begin, server) = if free.len() < s.servers {
            (t, None)
        } else {
            let Reverse(at) = free.pop().expect("a server");
            (at.max(t), Some(at))
        };
        // A caller gives up after GIVE_UP: a call still waiting in line then leaves it (as
        // our backend's does), one being worked on is finished anyway.
        if begin >= t + GIVE_UP {
            if let Some(at) = server {
                free.push(Reverse(at));
            }
            out.push(Reverse((t + GIVE_UP, t, in_flight, false)));
            continue;
        }
        let (end, answered) = match (s.work)(t, &mut rng) {
            Some(work) => (begin + work, true),
            None => (t + GIVE_UP, false),
        };
        if answered {
            free.push(Reverse(end));
        } else if s.servers != usize::MAX {
            // A silent backend's server is stuck for good.
            free.push(Reverse(Duration::MAX / 2));
        }
        let (end, answered) = if end - t > GIVE_UP {
            (t + GIVE_UP, false)
        } else {
            (end, answered)
        };
        out.push(Reverse((end, t, in_flight, answered)));
    }
    o.took.sort();
    o.regime_at_end = Some(algo.regime());
    o.seconds = (s.length - from).as_secs_f64();
    o
}

#[test]
fn where_nothing_is_overloaded_nothing_is_refused() {
    for name in HEALTHY {
        for o in runs(&scenario(name)) {
            assert_eq!(o.refused, 0, "{name}: {o:?}");
            if name != "slower at 40%" && name != "cold burst" {
                assert!(!o.overloaded_ever, "{name}: {o:?}");
            }
        }
    }
}

#[test]
fn a_backend_that_stalls_now_and_then_costs_little_and_briefly() {
    // A stall of 150 ms every 5 s (3% of the time frozen) at half the capacity leaves a line
    // that takes as long again to clear: for a moment the backend really is behind, and may be
    // found overloaded. What that may cost: 2% of the calls, and the limit open again within
    // 3 s.
    for o in runs(&scenario("stalls at 50%")) {
        assert!(o.refused * 50 <= o.offered, "{o:?}");
        assert_eq!(o.regime_at_end, Some(Regime::Open), "{o:?}");
        for pair in o.changes.windows(2) {
            let t = |c: &str| c.split('s').next().unwrap().parse::<f64>().unwrap();
            if pair[0].contains("Overloaded") && pair[1].contains("Recovered") {
                assert!(t(&pair[1]) - t(&pair[0]) <= 3.0, "{o:?}");
            }
        }
    }
}

#[test]
fn a_silent_backend_moves_nothing() {
    for o in runs(&scenario("silent")) {
        assert_eq!(o.regime_at_end, Some(Regime::Open), "{o:?}");
    }
}

#[test]
fn ten_times_overload_keeps_goodput_and_admitted_latency() {
    for o in runs(&scenario("10x overload")) {
        assert!(o.goodput() >= 0.9 * 200.0, "goodput {}: {o:?}", o.goodput());
        assert!(o.percentile(0.5) <= ms(160), "{o:?}");
        assert!(o.percentile(0.99) <= ms(250), "{o:?}");
        let (low, high) = o.limit_range();
        assert!(low >= 15 && high <= 45, "limit {low}..{high}: {o:?}");
    }
}

#[test]
fn a_fixed_capacity_of_two_settles_and_stays() {
    for o in runs(&scenario("capacity 2 at 2x")) {
        assert!(
            o.goodput() >= 0.95 * 100.0,
            "goodput {}: {o:?}",
            o.goodput()
        );
        let (low, high) = o.limit_range();
        assert!(low >= 2 && high <= 6, "limit {low}..{high}: {o:?}");
    }
}

#[test]
fn a_backend_that_slows_down_under_overload_keeps_its_goodput() {
    for o in runs(&scenario("2x, then slower")) {
        assert!(o.goodput() >= 0.9 * 100.0, "goodput {}: {o:?}", o.goodput());
        assert!(o.percentile(0.99) <= ms(500), "{o:?}");
    }
}

#[test]
fn the_limit_opens_again_when_the_overload_ends() {
    for o in runs(&scenario("10x, then 0.5x")) {
        assert_eq!(o.refused, 0, "{o:?}");
        assert_eq!(o.regime_at_end, Some(Regime::Open), "{o:?}");
    }
}

#[test]
fn ten_times_overload_of_a_wide_spread_keeps_goodput() {
    for o in runs(&scenario("wide spread, 10x")) {
        let capacity = 50.0 / 0.0323;
        assert!(
            o.goodput() >= 0.85 * capacity,
            "goodput {}: {o:?}",
            o.goodput()
        );
    }
}
