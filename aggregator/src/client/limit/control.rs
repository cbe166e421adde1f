//! The adaptive limit's decisions, as a pure state machine: it is told what one backend's
//! calls did ([`Control::observe`]) and answers with the limit, nothing else. No clock of its
//! own, no locks, no I/O: the simulator in this module's tests drives it through whole
//! scenarios in virtual time, and [`super::slots`] applies what it decides.
//!
//! **Two regimes.** A backend is *open* until it is shown to be overloaded: the limit is then
//! only the ceiling ([`OPEN`]) and refuses nothing a healthy deployment sends. It is
//! *overloaded* once its answers are slower than its no-load time by more than [`ALLOWANCE`]
//! (and than their usual spread) while calls pile up at it (they start faster than they end,
//! beyond chance, for `SUSTAINED`; or several times faster for `FLOOD_FOR`), or while most
//! of its calls run out of time (callers that wait for each answer cannot pile up). Calls
//! that ran out of time count as answers at least as slow as they waited: a line longer than
//! the timeouts answers nobody in time, and must still be seen. Only then is the limit
//! enforced, and set by Little's law: of the calls in flight, the share that the backend is
//! working on rather than queueing is `no-load time / answer time`, so `in flight x no-load /
//! answer time` is what it can take, and the limit is that times [`ALLOWANCE`] (a little line
//! keeps it busy). Answers within the allowance let the limit grow the same way; quiet
//! intervals (no call refused, answers within the allowance) bring the backend back to open.
//!
//! **What is not overload**, and why the regimes tell it apart:
//! - a heavy tail, or replicas of mixed speed: the *median* answer time does not move;
//! - a backend that got slower without being overloaded: answers slow down once, but calls
//!   end as fast as they start, so nothing piles up (the no-load time then follows it);
//! - a silent or unreachable endpoint: it answers nothing, and a backend that answered nothing
//!   is never found overloaded (its calls fail fast elsewhere, see `super::super::silence`);
//! - a backend (or this host) stalled for a moment: calls pile up, then all end at once;
//!   evidence must last;
//! - a limit being measured: nothing is measured by pinning calls low. The no-load time is
//!   learnt from the answers themselves: an average of interval medians while open, and while
//!   overloaded, from any interval faster than it (the backend proved it can answer that fast),
//!   or replaced when cutting the calls in flight did not make answers faster (a slower
//!   backend, not a line).
//!
//! Anchors: Netflix concurrency-limits' Gradient2 (no drain; a limit that does not move while
//! it holds nobody back), DAGOR (queueing, not answer time, as the signal of overload), and
//! Little's law for the level.

use std::time::{Duration, Instant};

mod measure;

pub use self::measure::{Answer, Totals};
use self::measure::{Interval, follow, level, median, target, unqueued};

/// The smallest an enforced limit goes: enough to keep measuring.
pub const MIN: usize = 2;
/// The limit of an open backend, and the most an enforced one grows to: a ceiling on calls in
/// flight at one backend, high enough never to refuse a healthy deployment's burst.
pub const OPEN: usize = 10_000;
/// Answers may take this many times the no-load time before the backend counts as queueing;
/// the enforced limit leaves this much of a line at the backend (enough to keep it busy).
pub const ALLOWANCE: f64 = 1.4;
/// The smallest line an enforced limit leaves at the backend, in calls.
const LINE: f64 = 2.0;
/// Answer-time jitter below this is noise, not queueing (scheduling on a busy host).
const NOISE: Duration = Duration::from_millis(1);
/// An interval lasts at least this long and two no-load answer times (the answers that judge
/// a limit are those of calls sent under it), or this long while the backend is open...
const INTERVAL: Duration = Duration::from_millis(100);
const OPEN_INTERVAL: Duration = Duration::from_millis(25);
/// ...and ends with at least this many answers; at most this many are kept.
const MIN_ANSWERS: usize = 8;
const MAX_ANSWERS: usize = 4096;
/// How fast the no-load time, and the spread of interval medians around it, follow an open
/// backend's answers (per interval): slowly, so that callers who wait for each answer (a
/// line that cannot pile up) do not teach it the line's time before their calls run out of
/// time in it.
const FOLLOW: f64 = 0.02;
/// Over-target intervals in a row after which what they counted starts again (a backend that
/// got slower stays over its old no-load time for a while: its counts must not add up forever).
const STREAK: u32 = 20;
/// An open backend counts as slow past this many typical spreads of its interval medians.
const SPREADS: f64 = 4.0;
/// Slower answers and calls piling up must last this long (and four no-load answer times)
/// to count as overload, unless calls flood in for [`FLOOD_FOR`]: a backend, or this host,
/// stalled for a moment lets calls pile up just as long, and is not overloaded.
const SUSTAINED: Duration = Duration::from_millis(500);
const FLOOD_FOR: Duration = Duration::from_millis(100);
/// Quiet intervals in a row that bring an overloaded backend back to open.
const QUIET: u32 = 10;
/// Intervals in a row of cuts, with calls in flight down to this share of what they were in the
/// fastest of them and answers no faster (at least this share of that interval's), that show
/// a slower backend rather than a line.
const REBASE_AFTER: u32 = 3;
const REBASE_IN_FLIGHT: f64 = 0.6;
const REBASE_NO_FASTER: f64 = 0.9;

/// Whether the limit is enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regime {
    Open,
    Overloaded,
}

/// What changed at the end of an interval, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// Calls pile up: the limit is enforced from now on.
    Overloaded {
        no_load: Duration,
        median: Duration,
        evidence: Evidence,
    },
    /// Quiet again: back to open.
    Recovered,
    /// Fewer calls in flight did not make answers faster: the backend is slower, not queueing.
    Slower { from: Duration, to: Duration },
}

/// What showed a backend overloaded, besides its slower answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    /// Calls started several times faster than they ended, over three intervals.
    Flood,
    /// Calls started faster than they ended, beyond chance, over intervals.
    Piling,
    /// Most calls ended without an answer (callers that wait for each answer).
    Lost,
}

/// The decision at the end of an interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub limit: usize,
    pub regime: Regime,
    pub change: Option<Change>,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct Control {
    regime: Regime,
    limit: f64,
    /// The no-load answer time (median); `None` before the first interval.
    no_load: Option<Duration>,
    interval_start: Instant,
    answers: Vec<Answer>,
    /// How far an open backend's interval medians stray from its no-load time, typically
    /// (the mean of |ln(median / no-load)|): a wide spread of answer times, few answers an
    /// interval, and the median of one interval is far from the next's without any line.
    spread: f64,
    at_start: Totals,
    /// The last interval's median.
    last_median: Option<Duration>,
    /// Open: intervals in a row over the allowance, calls piled up over them, calls ended over
    /// them, and intervals in a row the median rose.
    over: u32,
    piled: i64,
    ended_over: u64,
    answered_over: u64,
    /// How long the intervals over the allowance lasted, together.
    over_for: Duration,
    rising: u32,
    /// Overloaded: quiet intervals in a row, and the cuts in a row so far.
    quiet: u32,
    cuts: Option<Cuts>,
}

/// Cuts in a row: the limit they started from, and their fastest interval (the line most
/// drained) with the calls in flight then.
#[derive(Debug, Clone, Copy)]
struct Cuts {
    limit: f64,
    fastest: Duration,
    in_flight: f64,
    intervals: u32,
}

impl Control {
    pub fn new(now: Instant) -> Self {
        Control {
            regime: Regime::Open,
            limit: OPEN as f64,
            no_load: None,
            interval_start: now,
            answers: Vec::new(),
            spread: 0.0,
            at_start: Totals::default(),
            last_median: None,
            over: 0,
            piled: 0,
            ended_over: 0,
            answered_over: 0,
            over_for: Duration::ZERO,
            rising: 0,
            quiet: 0,
            cuts: None,
        }
    }

    pub fn regime(&self) -> Regime {
        self.regime
    }

    /// The no-load answer time as known now.
    pub fn no_load(&self) -> Option<Duration> {
        self.no_load
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit.round() as usize
    }

    /// Takes one answer (or a call that ran out of time waiting for one); at the end of an
    /// interval, the decision. `totals` are the backend's running totals at `now`.
    pub fn observe(&mut self, now: Instant, answer: Answer, totals: Totals) -> Option<Decision> {
        if self.answers.len() < MAX_ANSWERS {
            self.answers.push(answer);
        }
        // Open, an interval is short: calls piling up at several times the rate they end must
        // be seen before the line grows long. Overloaded, the limit moves at most once in
        // [`INTERVAL`].
        let least = match self.regime {
            Regime::Open => OPEN_INTERVAL,
            Regime::Overloaded => INTERVAL,
        };
        let interval = self.no_load.map_or(INTERVAL, |n| least.max(n * 2));
        if now.saturating_duration_since(self.interval_start) < interval
            || self.answers.len() < MIN_ANSWERS
        {
            return None;
        }
        let n = self.answers.len();
        let in_flight = self.answers.iter().map(|a| a.in_flight).sum::<usize>() as f64 / n as f64;
        let answered = self.answers.iter().filter(|a| a.answered).count() as u64;
        if self.no_load.is_none() && answered == 0 {
            // Nothing to learn the no-load time from yet.
            self.answers.clear();
            return None;
        }
        let first = self.no_load.is_none().then(|| unqueued(&self.answers));
        let median = median(self.answers.iter().map(|a| a.took));
        let p90 = {
            let mut times: Vec<Duration> = self.answers.iter().map(|a| a.took).collect();
            let at = times.len() * 9 / 10;
            *times.select_nth_unstable(at).1
        };
        let started = totals.started.saturating_sub(self.at_start.started);
        let ended = totals.ended.saturating_sub(self.at_start.ended);
        let refused = totals.refused.saturating_sub(self.at_start.refused);
        let lasted = now.saturating_duration_since(self.interval_start);
        self.answers.clear();
        self.at_start = totals;
        self.interval_start = now;
        let change = match self.no_load {
            None => {
                self.no_load = first;
                None
            }
            Some(no_load) => {
                let interval = Interval {
                    lasted,
                    median,
                    p90,
                    in_flight,
                    answered,
                    observed: n as u64,
                    started,
                    ended,
                    refused,
                };
                match self.regime {
                    Regime::Open => self.open(no_load, interval),
                    Regime::Overloaded => self.overloaded(no_load, interval),
                }
            }
        };
        self.last_median = Some(median);
        self.limit = self.limit.clamp(MIN as f64, OPEN as f64);
        Some(Decision {
            limit: self.limit(),
            regime: self.regime,
            change,
        })
    }

    /// An open backend: watch for calls piling up; let the no-load time follow the backend.
    fn open(&mut self, no_load: Duration, i: Interval) -> Option<Change> {
        let piled_now = i.started as i64 - i.ended as i64;
        // Slower than the allowance, and than the usual spread explains.
        let slow = target(no_load).max(no_load.mul_f64((SPREADS * self.spread).exp()));
        let strays = (i.median.as_secs_f64() / no_load.as_secs_f64().max(1e-9))
            .ln()
            .abs();
        if i.median > slow {
            self.over += 1;
            self.over_for += i.lasted;
            self.piled += piled_now;
            self.ended_over += i.ended;
            self.answered_over += i.answered;
            let rose = self
                .last_median
                .is_some_and(|last| i.median > last.mul_f64(1.05) + NOISE);
            self.rising = if rose { self.rising + 1 } else { 0 };
            // More calls started than ended beyond what chance explains (both counts vary by
            // about their square root), or answers slower interval after interval while calls
            // pile up (a backend that got slower once has its answers slow down once, and its
            // calls in flight grow once). Or, when callers wait for each answer before sending
            // again (nothing can pile up), most calls ended without one: the line is longer
            // than they can wait.
            let chance = (2.0 * self.ended_over as f64).sqrt();
            let piled = self.piled as f64;
            let piling = piled > 3.0 * chance + 4.0 || (self.rising >= 3 && piled > chance + 2.0);
            let lost = self.ended_over.saturating_sub(self.answered_over) > self.answered_over;
            if self.over >= STREAK {
                self.reset_open();
                self.over = 1;
            }
            // Calls arriving several times faster than they end, over three intervals and
            // [`FLOOD_FOR`], leave no doubt. (Less is not enough: a backend or host that stalls
            // for a moment ends no call meanwhile, then ends them all at once.)
            let flood = self.over >= 3
                && self.over_for >= FLOOD_FOR
                && piled > 2.0 * self.ended_over as f64 + 3.0 * chance + 10.0;
            // Short of a flood, the evidence must hold for [`SUSTAINED`].
            let sustained = self.over >= 2 && self.over_for >= SUSTAINED.max(no_load * 4);
            let evidence = if flood {
                Some(Evidence::Flood)
            } else if !sustained {
                None
            } else if piling {
                Some(Evidence::Piling)
            } else if lost {
                Some(Evidence::Lost)
            } else {
                None
            };
            // A backend that answered nothing at all is silent or down, not overloaded: its
            // calls fail fast elsewhere (see `client::silence`), and refusing calls for it
            // would cost every call.
            let evidence = evidence.filter(|_| self.answered_over > 0);
            if let Some(evidence) = evidence {
                self.regime = Regime::Overloaded;
                self.limit = level(i.in_flight, no_load, i.median);
                self.reset_open();
                self.quiet = 0;
                self.cuts = None;
                return Some(Change::Overloaded {
                    no_load,
                    median: i.median,
                    evidence,
                });
            }
        } else {
            self.reset_open();
            self.spread += FOLLOW * (strays - self.spread);
        }
        // Follow the backend's own answer time, but only over intervals in which calls ended at
        // least as fast as they started (when they pile up, a slower answer is a line) and most
        // were answered.
        if piled_now <= 0 && i.answered * 2 >= i.ended {
            self.no_load = Some(follow(no_load, i.median, FOLLOW));
        }
        None
    }

    fn reset_open(&mut self) {
        self.over = 0;
        self.over_for = Duration::ZERO;
        self.piled = 0;
        self.ended_over = 0;
        self.answered_over = 0;
        self.rising = 0;
    }

    /// An overloaded backend: the limit by Little's law, until quiet again.
    fn overloaded(&mut self, mut no_load: Duration, i: Interval) -> Option<Change> {
        if i.median < no_load {
            // The backend answered faster than its no-load time: that time was too high.
            no_load = follow(no_load, i.median, 0.5);
            self.no_load = Some(no_load);
        }
        let level = level(i.in_flight, no_load, i.median);
        if i.median > target(no_load) {
            self.quiet = 0;
            let cuts = self.cuts.get_or_insert(Cuts {
                limit: self.limit,
                fastest: i.median,
                in_flight: i.in_flight,
                intervals: 0,
            });
            cuts.intervals += 1;
            // Faster by more than noise: the cuts drained some line.
            if i.median < cuts.fastest.mul_f64(REBASE_NO_FASTER) {
                (cuts.fastest, cuts.in_flight) = (i.median, i.in_flight);
            }
            let no_faster = i.median >= cuts.fastest.mul_f64(REBASE_NO_FASTER);
            let fewer = i.in_flight <= cuts.in_flight * REBASE_IN_FLIGHT;
            // Only answers prove a backend slower: a call that ran out of time says only that
            // it waited at least that long.
            let answered = i.answered * 2 >= i.observed;
            if cuts.intervals >= REBASE_AFTER && fewer && no_faster && answered {
                // Answers as slow with far fewer calls in flight: no line to cut.
                self.limit = cuts.limit;
                self.cuts = None;
                self.no_load = Some(i.median);
                return Some(Change::Slower {
                    from: no_load,
                    to: i.median,
                });
            }
            self.limit = self.limit.min(level);
            return None;
        }
        self.cuts = None;
        // Grows by the allowance at most: the calls in flight that the level counts started
        // an answer time ago, and a line that just drained still counts in them. Calls refused
        // while nine answers in ten took no longer than without load (no line at all) grow it
        // by the allowance: the level counts only the calls let in, and a limit near them
        // refuses their ups and downs (after a moment's stall taken for overload, say).
        let grown = if i.refused > 0 && i.p90 <= no_load.mul_f64(1.2) + NOISE {
            self.limit * ALLOWANCE
        } else {
            level.min(self.limit * ALLOWANCE)
        };
        self.limit = self.limit.max(grown);
        self.quiet = if i.refused == 0 { self.quiet + 1 } else { 0 };
        if self.quiet >= QUIET {
            self.regime = Regime::Open;
            self.limit = OPEN as f64;
            self.quiet = 0;
            return Some(Change::Recovered);
        }
        None
    }
}

#[cfg(test)]
mod sim;
