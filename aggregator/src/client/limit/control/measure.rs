//! What the limit measures: each answer (or call that ran out of time), the running totals of
//! calls started, ended and refused, what an interval of them showed, and the arithmetic the
//! decisions are made of (median, target, Little's law).

use std::time::Duration;

use super::{ALLOWANCE, LINE, MIN, NOISE};

/// One answered call, as the limit sees it.
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// From the moment it held a slot to its reply: a wait for the slot is not the backend's.
    /// For a call that ran out of time first, how long it waited (its answer would have taken
    /// longer still).
    pub took: Duration,
    /// Calls in flight at the backend when it started, itself included.
    pub in_flight: usize,
    /// Whether it was answered; false: it ran out of time waiting.
    pub answered: bool,
}

/// Running totals of the backend's calls, read when an interval ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Calls that took a slot.
    pub started: u64,
    /// Calls that gave it back, however they ended.
    pub ended: u64,
    /// Calls refused for this backend's limit (at the door, or after waiting for a slot).
    pub refused: u64,
}

/// What one interval showed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Interval {
    pub(super) lasted: Duration,
    pub(super) median: Duration,
    pub(super) p90: Duration,
    /// Calls answered (the rest of those ended failed, or ran out of time).
    pub(super) answered: u64,
    /// Calls the median is taken over: the answered, and those that ran out of time waiting.
    pub(super) observed: u64,
    /// Calls in flight, on average, when the interval's answered calls started.
    pub(super) in_flight: f64,
    pub(super) started: u64,
    pub(super) ended: u64,
    pub(super) refused: u64,
}

/// The median answer time of the calls that started with the fewest in flight (at most one
/// more than the fewest): after a cold start, the earliest calls, answered before any line
/// could form. (On a host too busy to run the aggregator at once, they wait for it too, and the
/// estimate is high: an overloaded backend is then held to a longer line than it should be.)
pub(super) fn unqueued(answers: &[Answer]) -> Duration {
    let answered = || answers.iter().filter(|a| a.answered);
    let fewest = answered().map(|a| a.in_flight).min().unwrap_or(0);
    median(
        answered()
            .filter(|a| a.in_flight <= fewest + 1)
            .map(|a| a.took),
    )
}

pub(super) fn median(times: impl Iterator<Item = Duration>) -> Duration {
    let mut times: Vec<Duration> = times.collect();
    let mid = times.len() / 2;
    *times.select_nth_unstable(mid).1
}

/// The answer time past which a backend is queueing.
pub(super) fn target(no_load: Duration) -> Duration {
    no_load.mul_f64(ALLOWANCE) + NOISE
}

/// Little's law: of `in_flight` calls answered in `median`, those the backend works on (rather
/// than queues) are `in_flight x no_load / median`; the limit is that plus the allowance, and
/// at least [`LINE`] more (a backend that works on two calls at once needs a line of two to
/// stay busy between arrivals).
pub(super) fn level(in_flight: f64, no_load: Duration, median: Duration) -> f64 {
    let working = in_flight * no_load.as_secs_f64() / median.as_secs_f64().max(1e-9);
    (working * ALLOWANCE).max(working + LINE).max(MIN as f64)
}

/// `from` moved `share` of the way to `to`.
pub(super) fn follow(from: Duration, to: Duration, share: f64) -> Duration {
    let (a, b) = (from.as_secs_f64(), to.as_secs_f64());
    Duration::from_secs_f64(a + share * (b - a))
}
