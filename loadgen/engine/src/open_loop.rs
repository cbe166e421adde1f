//! The open loop (`--rate`): calls leave on a schedule, whatever the target does, as wrk2's and
//! k6's constant-arrival-rate do.
//!
//! Call `i` is due at `start + i / rate`. Each connection has one [`Dispatcher`], running on
//! the connection's task (see `Conn::beside`), that takes every N-th call of the schedule (N
//! connections): it waits for the next due time with the precise timer, starts every call that
//! has fallen due, and collects the calls that finish. A call is a future made when it starts
//! and dropped when it ends, so memory follows the calls outstanding, not a number of callers
//! set up front. Calls outstanding grow on demand up to `--max-outstanding`; a call that falls
//! due with that many outstanding is **dropped** and counted, never delayed: delaying it would
//! turn the open loop into a closed one without saying so.
//!
//! Each call's latency counts from when it was due, not from when it left (coordinated
//! omission): if the loadgen itself falls behind, the lateness is charged to the call, and the
//! report shows it. A call belongs to the window it fell due in.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;
use tonic::Code;

use crate::caller::{Caller, Done};
use crate::model::Progress;
use crate::stats::{Measured, lock};

/// The schedule of one open-loop run: which calls fall due when, and which are measured.
#[derive(Debug, Clone)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    /// The first call of the measured window (the ones before are the warm-up).
    first_measured: u64,
    /// The call after the last one; `None`: until stopped.
    end: Option<u64>,
}

impl Schedule {
    /// `rate` calls per second from `start`; the calls due in the first `warmup` are not
    /// measured; then `requests` calls, or those due within `duration`.
    pub fn new(
        start: Instant,
        rate: f64,
        warmup: Duration,
        duration: Option<Duration>,
        requests: Option<u64>,
    ) -> Self {
        // The calls due before `t`: ceil(t × rate), less a hair so that float noise
        // (2.2 × 200 = 440.00000000000006) does not add a call.
        let due_before = |t: Duration| (t.as_secs_f64() * rate - 1e-6).ceil().max(0.0) as u64;
        let first_measured = due_before(warmup);
        let end = match (requests, duration) {
            (Some(n), _) => Some(first_measured + n),
            (None, Some(d)) => Some(due_before(warmup + d)),
            (None, None) => None,
        };
        Schedule {
            start,
            rate,
            first_measured,
            end,
        }
    }

    /// When call `i` is due.
    pub fn due(&self, i: u64) -> Instant {
        self.start + Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// Whether the schedule has a call `i`.
    pub fn has(&self, i: u64) -> bool {
        self.end.is_none_or(|end| i < end)
    }

    /// Whether call `i` is in the measured window.
    pub fn is_measured(&self, i: u64) -> bool {
        i >= self.first_measured && self.has(i)
    }

    /// Calls in the measured window, if the schedule ends.
    pub fn measured_calls(&self) -> Option<u64> {
        self.end.map(|end| end.saturating_sub(self.first_measured))
    }

    /// When the last call is due, if the schedule ends.
    pub fn last_due(&self) -> Option<Instant> {
        self.end.map(|end| self.due(end.saturating_sub(1)))
    }

    /// The measured window: from the first measured call's due time to the due time of the
    /// call after the last (`None`: until stopped).
    pub fn window(&self) -> (Instant, Option<Instant>) {
        (
            self.due(self.first_measured),
            self.end.map(|end| self.due(end)),
        )
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

/// What happened to the calls of the measured window, added up by every dispatcher as it goes
/// (a dispatcher may be dropped at the end of the drain, so nothing is kept for later).
#[derive(Debug, Default)]
pub struct Counts {
    pub sent: AtomicU64,
    pub dropped: AtomicU64,
    /// Answers that arrived within the window, whenever their calls were due: the rate the
    /// target achieved, as a closed loop counts it.
    pub answered_in_window: AtomicU64,
    /// The most calls outstanding at once (warm-up included).
    pub peak_outstanding: AtomicU64,
}

/// One connection's share of the schedule: calls `first`, `first + stride`, ...
pub struct Dispatcher {
    pub schedule: Arc<Schedule>,
    pub caller: Arc<Caller>,
    pub first: u64,
    pub stride: u64,
    pub max_outstanding: usize,
    /// Bound on one call.
    pub timeout: Option<Duration>,
    pub shard: Arc<Mutex<Measured>>,
    pub progress: Arc<Progress>,
    pub counts: Arc<Counts>,
}

/// A call that finished: when it was due, whether it is measured, what it came to, and when.
type Finished = (Instant, bool, Done, Instant);

impl Dispatcher {
    /// Sends its calls as they fall due until the schedule ends, then waits for the calls
    /// outstanding (the driver stops it when the drain runs out).
    pub async fn run(self) {
        let mut next = self.first;
        let mut sleep = self.wait_for(next);
        let mut calls = FuturesUnordered::new();
        let mut peak = 0u64;
        let (opens, closes) = self.schedule.window();
        std::future::poll_fn(|cx| {
            // Start every call that has fallen due. Several at once when the dispatcher was
            // late (they then leave in one write, and each still counts from its due time).
            while let Some((due, wait)) = &mut sleep {
                if Pin::new(wait).poll(cx).is_pending() {
                    break;
                }
                let (due, measured) = (*due, self.schedule.is_measured(next));
                let outstanding = self.progress.outstanding.fetch_add(1, Relaxed);
                if outstanding < self.max_outstanding {
                    calls.push(call(self.caller.clone(), due, measured, self.timeout));
                    self.progress.sent.fetch_add(1, Relaxed);
                    if measured {
                        self.counts.sent.fetch_add(1, Relaxed);
                    }
                    if outstanding as u64 + 1 > peak {
                        peak = outstanding as u64 + 1;
                        self.counts.peak_outstanding.fetch_max(peak, Relaxed);
                    }
                } else {
                    self.progress.outstanding.fetch_sub(1, Relaxed);
                    self.progress.dropped.fetch_add(1, Relaxed);
                    if measured {
                        self.counts.dropped.fetch_add(1, Relaxed);
                    }
                }
                next += self.stride;
                sleep = self.wait_for(next);
            }
            // Record the calls that finished, under one lock per batch.
            let mut shard = None;
            while let Poll::Ready(Some(finished)) = calls.poll_next_unpin(cx) {
                self.progress.outstanding.fetch_sub(1, Relaxed);
                let (due, measured, done, at): Finished = finished;
                if at >= opens && closes.is_none_or(|closes| at < closes) {
                    self.counts.answered_in_window.fetch_add(1, Relaxed);
                }
                if measured {
                    let m = shard.get_or_insert_with(|| lock(&self.shard));
                    done.record(&mut m.stats, at - due);
                    m.last = m.last.max(Some(at));
                    self.progress.calls.fetch_add(1, Relaxed);
                    if done.code != Code::Ok {
                        self.progress.errors.fetch_add(1, Relaxed);
                    }
                }
            }
            if sleep.is_none() && calls.is_empty() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// The wait for call `i`, if the schedule has it. Not tokio's timer: it would send the
    /// call up to a couple of milliseconds after it is due, and that would count against the
    /// target.
    fn wait_for(&self, i: u64) -> Option<(Instant, fanout_timer::Sleep)> {
        self.schedule.has(i).then(|| {
            let due = self.schedule.due(i);
            (due, fanout_timer::sleep_until(due.into_std()))
        })
    }
}

/// One call of the schedule, made when it falls due.
async fn call(
    caller: Arc<Caller>,
    due: Instant,
    measured: bool,
    timeout: Option<Duration>,
) -> Finished {
    let done = caller.invoke(timeout).await;
    (due, measured, done, Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_counts_whole_calls() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        // 1000/s, 100 ms of warm-up, 1 s measured: calls 100 to 1099.
        let s = Schedule::new(start, 1000.0, ms(100), Some(ms(1000)), None);
        assert!(!s.is_measured(99) && s.is_measured(100) && s.is_measured(1099));
        assert!(!s.has(1100));
        assert_eq!(s.measured_calls(), Some(1000));
        assert_eq!(s.due(100) - start, ms(100));
        assert_eq!(s.last_due().unwrap() - start, ms(1099));
        // No float noise: 2.2 s at 200/s is 440 calls, not 441.
        let s = Schedule::new(start, 200.0, ms(200), Some(ms(2000)), None);
        assert_eq!(s.measured_calls(), Some(400));
        // --requests: exactly that many measured, whatever the rate.
        let s = Schedule::new(start, 3.0, ms(1000), None, Some(7));
        assert_eq!(s.measured_calls(), Some(7));
        assert!(s.is_measured(3) && s.is_measured(9) && !s.has(10));
        // Neither: until stopped.
        let s = Schedule::new(start, 3.0, Duration::ZERO, None, None);
        assert!(s.has(u64::MAX - 1) && s.measured_calls().is_none());
    }
}
