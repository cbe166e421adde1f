//! The load itself: a closed loop of callers, or the open loop's dispatchers
//! ([`crate::open_loop`]), all on their connections' tasks, until the window ends.
//!
//! **Closed loop** (`-c C`): C callers, each calling again as soon as its call returns. A call
//! belongs to the window it completes in; at the end of the window the calls in flight are
//! abandoned, exactly as a per-call select would, but with no timer per call.
//!
//! **Open loop** (`--rate R`): R calls per second on a schedule; calls outstanding grow on
//! demand up to `--max-outstanding`, calls falling due beyond it are dropped and counted. After
//! the schedule the calls outstanding get `--drain` to finish; those still unanswered are cut
//! off and counted. The run never lasts longer than warm-up + duration + drain.
//!
//! Each caller or dispatcher runs on the task of its connection (see `Conn::beside`): the calls
//! of one connection then leave in one write per turn, not one write per call. Measurements go
//! into one set of histograms per worker thread ([`Shards`]); live progress through a few
//! shared atomics.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until};
use tonic::Code;

use crate::caller::Caller;
use crate::model::{Load, OpenLoop, Outcome, Progress, Shape};
use crate::open_loop::{Counts, Dispatcher, Schedule};
use crate::stats::{Measured, Shards, lock};

/// How long a caller waits after a call failed because its connection is gone.
const CLOSED_CONNECTION_PAUSE: Duration = Duration::from_millis(100);

/// Runs `load` over `callers` (one per connection) from `start`, until the duration or the
/// request count is reached (an open loop: and its drain), or `stop` turns true.
pub async fn drive(
    load: Load,
    callers: Vec<Caller>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
    start: Instant,
) -> Outcome {
    let measure_from = start + load.warmup;
    let callers: Vec<Arc<Caller>> = callers.into_iter().map(Arc::new).collect();
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let shards = Shards::new(callers.len(), threads);
    let mut running = Running::default();

    // What ends the run by the clock: a closed loop's window, an open loop's drain.
    let (deadline, open) = match load.shape {
        Shape::Closed { callers: c } => {
            let closed = Arc::new(ClosedLoop {
                measure_from,
                end: load.duration.map(|d| measure_from + d),
                requests: load.requests,
                measured: AtomicU64::new(0),
                timeout: load.timeout,
            });
            for w in 0..c.max(1) {
                let k = w % callers.len();
                let work = closed.clone().caller(
                    callers[k].clone(),
                    progress.clone(),
                    shards.for_connection(k),
                );
                running.start(callers[k].conn(), work);
            }
            (closed.end, None)
        }
        Shape::Open {
            rate,
            max_outstanding,
            drain,
        } => {
            let schedule = Arc::new(Schedule::new(
                start,
                rate,
                load.warmup,
                load.duration,
                load.requests,
            ));
            let counts = Arc::new(Counts::default());
            for (k, caller) in callers.iter().enumerate() {
                let dispatcher = Dispatcher {
                    schedule: schedule.clone(),
                    caller: caller.clone(),
                    first: k as u64,
                    stride: callers.len() as u64,
                    max_outstanding,
                    timeout: load.timeout,
                    shard: shards.for_connection(k),
                    progress: progress.clone(),
                    counts: counts.clone(),
                };
                running.start(caller.conn(), dispatcher.run());
            }
            (
                schedule.last_due().map(|last| last + drain),
                Some((schedule, counts, drain)),
            )
        }
    };

    let by_the_clock = async {
        match deadline {
            Some(at) => sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    let warmed = async {
        sleep_until(measure_from).await;
        progress.measuring.store(true, Relaxed);
        std::future::pending::<()>().await
    };
    let interrupted = tokio::select! {
        () = by_the_clock => false,
        () = running.all_done() => false,
        () = warmed => false,
        _ = stop.wait_for(|stop| *stop) => true,
    };
    let stopped = Instant::now();
    // Abandon the calls in flight and wait until every task has let go of its figures.
    for caller in &callers {
        caller.conn().stop_beside();
    }
    running.all_done().await;

    let Measured { stats, last } = shards.total();
    let (elapsed, open, answered) = match open {
        None => {
            let elapsed = match (load.duration, interrupted) {
                // Completions inside the window, over the window.
                (Some(d), false) => d,
                _ => last
                    .unwrap_or(measure_from)
                    .saturating_duration_since(measure_from),
            };
            (elapsed, None, stats.calls())
        }
        Some((schedule, counts, drain)) => {
            let (sent, mut dropped) = (counts.sent.load(Relaxed), counts.dropped.load(Relaxed));
            let due = match schedule.measured_calls() {
                Some(all) if !interrupted => {
                    // Calls the loadgen itself never got to (so far behind that the drain ran
                    // out first) were not sent either: dropped.
                    dropped = all.saturating_sub(sent);
                    all
                }
                _ => sent + dropped,
            };
            let open = OpenLoop {
                offered_rate: schedule.rate(),
                due,
                sent,
                dropped,
                cut_off: sent.saturating_sub(stats.calls()),
                peak_outstanding: counts.peak_outstanding.load(Relaxed),
                max_outstanding: load.shape.concurrency() as u64,
                drain_s: drain.as_secs_f64(),
            };
            let (opens, closes) = schedule.window();
            let elapsed = match closes {
                Some(closes) if !interrupted => closes - opens,
                _ => stopped
                    .min(closes.unwrap_or(stopped))
                    .saturating_duration_since(opens),
            };
            let answered = counts.answered_in_window.load(Relaxed);
            (elapsed, Some(open), answered)
        }
    };
    Outcome {
        stats,
        elapsed,
        interrupted,
        open,
        answered,
    }
}

/// The tasks a run started on its connections' tasks.
#[derive(Default)]
struct Running {
    /// Each resolves when its task ends or is dropped (stopped, or its connection's task gone).
    done: Vec<oneshot::Receiver<()>>,
}

impl Running {
    fn start(&mut self, conn: &crate::conn::Conn, work: impl Future<Output = ()> + Send + 'static) {
        let (finished, done) = oneshot::channel::<()>();
        self.done.push(done);
        conn.beside(async move {
            work.await;
            drop(finished);
        });
    }

    /// Waits until every task has ended or been dropped.
    async fn all_done(&mut self) {
        for done in &mut self.done {
            if !done.is_terminated() {
                let _ = done.await;
            }
        }
    }
}

/// What the callers of a closed loop share.
struct ClosedLoop {
    measure_from: Instant,
    /// End of the window, with a duration.
    end: Option<Instant>,
    /// With --requests: how many calls to measure, and how many so far.
    requests: Option<u64>,
    measured: AtomicU64,
    timeout: Option<Duration>,
}

impl ClosedLoop {
    /// One caller: calls until the run is over.
    async fn caller(
        self: Arc<Self>,
        caller: Arc<Caller>,
        progress: Arc<Progress>,
        shard: Arc<Mutex<Measured>>,
    ) {
        let s = self;
        loop {
            let started = Instant::now();
            if let Some(n) = s.requests
                && started >= s.measure_from
                && s.measured.fetch_add(1, Relaxed) >= n
            {
                break;
            }
            let done = caller.invoke(s.timeout).await;
            let finished = Instant::now();
            if finished >= s.measure_from && s.end.is_none_or(|end| finished < end) {
                let mut m = lock(&shard);
                done.record(&mut m.stats, finished - started);
                m.last = Some(finished);
                drop(m);
                progress.calls.fetch_add(1, Relaxed);
                if done.code != Code::Ok {
                    progress.errors.fetch_add(1, Relaxed);
                }
            }
            if done.code != Code::Ok && caller.conn().is_closed() {
                // The connection ended and connecting again failed (the target went away): the
                // calls fail at once until a connect succeeds. Count that at a client's reconnect
                // pace rather than a million times a second; the report shows UNAVAILABLE.
                sleep(CLOSED_CONNECTION_PAUSE).await;
            }
        }
    }
}
