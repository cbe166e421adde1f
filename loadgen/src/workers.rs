//! The load itself: `concurrency` worker tasks calling the target, in a closed loop (each
//! worker calls again as soon as its call returns) or an open loop at a constant rate.
//!
//! In rate mode the calls follow a schedule (call `i` is due at `start + i / rate`) and each
//! call's latency is measured from when it was *due*, not from when a worker got round to
//! sending it. A server that stalls makes the calls queued behind the stall count as slow, as
//! they would for real users, instead of hiding them (coordinated omission). `concurrency` is
//! then the most calls outstanding at once.
//!
//! Each worker keeps its own [`Stats`]; they are merged when the run ends. Live progress goes
//! through a few shared atomics.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_proto::paths;
use fanout_proto::v1::{
    AggregateEvent, AggregateReply, AggregateRequest, FetchReply, FetchRequest,
    aggregate_event::Event,
};
use tokio::sync::{oneshot, watch};
use tokio::time::{Instant, sleep, sleep_until, timeout};
use tonic::Code;
use tracing::Instrument;

use crate::conn::{Conn, Prepared};
use crate::grpc::decode;
use crate::model::{Load, Outcome, Progress, Rpc};
use crate::stats::Stats;

/// What a worker calls with: one connection, and one kind of call (its RPC and request)
/// encoded once, sent again for every call the worker makes. Cloning shares the connection.
///
/// Not `Call`: that names one call, and the aggregator's `call` module is one backend call
/// with its retries; a `Caller` is what makes the calls, many of them.
#[derive(Debug, Clone)]
pub struct Caller {
    conn: Conn,
    rpc: Rpc,
    request: Prepared,
}

/// What one call came to.
struct Done {
    code: Code,
    degraded: bool,
    first_result: Option<Duration>,
    results: u64,
}

impl Done {
    fn status(code: Code) -> Self {
        Done {
            code,
            degraded: false,
            first_result: None,
            results: 0,
        }
    }
}

impl Caller {
    /// Calls of `rpc` over `conn`: `fetch` for a `Fetch`, `aggregate` for the other two;
    /// `timeout` is sent as each call's `grpc-timeout`.
    pub fn new(
        conn: &Conn,
        rpc: Rpc,
        fetch: &FetchRequest,
        aggregate: &AggregateRequest,
        timeout: Option<Duration>,
    ) -> Self {
        let request = match rpc {
            Rpc::Fetch => Prepared::new(paths::BACKEND_FETCH, fetch, timeout),
            Rpc::Aggregate => Prepared::new(paths::AGGREGATE, aggregate, timeout),
            Rpc::Stream => Prepared::new(paths::AGGREGATE_STREAM, aggregate, timeout),
        };
        Caller {
            conn: conn.clone(),
            rpc,
            request,
        }
    }

    /// The connection its calls go over.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Makes the call once; the status is the target's answer (the probe before a run).
    pub async fn once(&self) -> Result<(), tonic::Status> {
        let span = tracing::Span::none();
        match self.rpc {
            Rpc::Fetch => {
                decode::<FetchReply>(self.conn.unary(&self.request, &span).await?).map(drop)
            }
            Rpc::Aggregate => {
                decode::<AggregateReply>(self.conn.unary(&self.request, &span).await?).map(drop)
            }
            Rpc::Stream => {
                self.conn
                    .server_stream(&self.request, &span, |m| {
                        decode::<AggregateEvent>(m).map(drop)
                    })
                    .await
            }
        }
    }

    async fn invoke(&self, limit: Option<Duration>) -> Done {
        // A client span, only when traces are exported (otherwise this is a no-op); its
        // context travels with the request.
        let span = tracing::info_span!("call", otel.name = "loadgen call", otel.kind = "client");
        let call = async {
            match self.rpc {
                // The answer is counted by its status, not decoded: the probe before the run
                // checked that this target answers Fetch with FetchReply.
                Rpc::Fetch => match self.conn.unary(&self.request, &span).await {
                    Ok(_) => Done::status(Code::Ok),
                    Err(s) => Done::status(s.code()),
                },
                Rpc::Aggregate => {
                    let reply = match self.conn.unary(&self.request, &span).await {
                        Ok(answer) => decode::<AggregateReply>(answer),
                        Err(s) => Err(s),
                    };
                    match reply {
                        Ok(reply) => {
                            let s = reply.summary.unwrap_or_default();
                            Done {
                                degraded: s.failed + s.timed_out > 0,
                                ..Done::status(Code::Ok)
                            }
                        }
                        Err(s) => Done::status(s.code()),
                    }
                }
                Rpc::Stream => {
                    let started = Instant::now();
                    let mut done = Done::status(Code::Ok);
                    let streamed = self
                        .conn
                        .server_stream(&self.request, &span, |message| {
                            match decode::<AggregateEvent>(message)?.event {
                                Some(Event::Result(_)) => {
                                    done.results += 1;
                                    done.first_result.get_or_insert_with(|| started.elapsed());
                                }
                                Some(Event::Summary(s)) => {
                                    done.degraded = s.failed + s.timed_out > 0
                                }
                                None => {}
                            }
                            Ok(())
                        })
                        .await;
                    if let Err(s) = streamed {
                        done.code = s.code();
                    }
                    done
                }
            }
        };
        let call = call.instrument(span.clone());
        match limit {
            Some(limit) => timeout(limit, call)
                .await
                .unwrap_or(Done::status(Code::DeadlineExceeded)),
            None => call.await,
        }
    }
}

/// Callers for `rpc`, one per connection; `timeout` is sent as each call's `grpc-timeout`.
pub fn callers(
    rpc: Rpc,
    conns: &[Conn],
    fetch: &FetchRequest,
    aggregate: &AggregateRequest,
    timeout: Option<Duration>,
) -> Vec<Caller> {
    conns
        .iter()
        .map(|conn| Caller::new(conn, rpc, fetch, aggregate, timeout))
        .collect()
}

/// How long a worker waits after a call failed because its connection is gone.
const CLOSED_CONNECTION_PAUSE: Duration = Duration::from_millis(100);

/// Shared schedule of one run.
struct Schedule {
    load: Load,
    start: Instant,
    measure_from: Instant,
    end: Option<Instant>,
    /// Rate mode: the next call's number in the schedule.
    tickets: AtomicU64,
    /// Measured calls so far, for `--requests`.
    measured: AtomicU64,
    /// Set when the run is over; workers check it between calls.
    done: AtomicBool,
}

/// What one worker measured. The driver reads it after stopping the worker, so a worker can be
/// aborted mid-call (its in-flight call abandoned) without losing what it measured.
#[derive(Default)]
struct Measured {
    stats: Stats,
    /// When its last measured call finished.
    last: Option<Instant>,
}

/// Runs `load` with the workers spread over `callers` (one per connection) until the duration
/// or the request count is reached, or `stop` turns true.
///
/// The hot path is one call and one uncontended lock: no timer or select per call. The driver
/// ends a closed loop at the end of its window by aborting the workers, abandoning the calls
/// still in flight, exactly as a per-call select would, but cheaper.
pub async fn drive(
    load: Load,
    callers: Vec<Caller>,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) -> Outcome {
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let schedule = Arc::new(Schedule {
        end: load.duration.map(|d| measure_from + d),
        start,
        measure_from,
        tickets: AtomicU64::new(0),
        measured: AtomicU64::new(0),
        done: AtomicBool::new(false),
        load,
    });
    // Each worker runs on the task of its connection (see `Conn::beside`): the calls of one
    // connection then leave in one write per turn, not one write per call.
    let mut measured = Vec::with_capacity(schedule.load.concurrency);
    let mut stopped = Vec::with_capacity(schedule.load.concurrency);
    for w in 0..schedule.load.concurrency.max(1) {
        let m = Arc::new(Mutex::new(Measured::default()));
        measured.push(m.clone());
        let caller = callers[w % callers.len()].clone();
        let conn = caller.conn().clone();
        let work = worker(schedule.clone(), caller, progress.clone(), m);
        let (finished, done) = oneshot::channel::<()>();
        stopped.push(done);
        // `done` resolves when the worker ends or is dropped (stopped, or its connection's task
        // gone).
        conn.beside(async move {
            work.await;
            drop(finished);
        });
    }

    // A closed loop ends at the end of its window; an open loop when its schedule is sent and
    // answered; either when asked to stop.
    let window_end = async {
        match schedule.end.filter(|_| schedule.load.rate.is_none()) {
            Some(end) => sleep_until(end).await,
            None => std::future::pending().await,
        }
    };
    let all_done = all_stopped(&mut stopped);
    let warmed = async {
        sleep_until(measure_from).await;
        progress.measuring.store(true, Relaxed);
        std::future::pending::<()>().await
    };
    let interrupted = tokio::select! {
        () = window_end => false,
        () = all_done => false,
        () = warmed => false,
        _ = stop.wait_for(|stop| *stop) => true,
    };
    schedule.done.store(true, Relaxed);
    // Abandon the calls in flight and wait until every worker has let go of its figures.
    for caller in &callers {
        caller.conn().stop_beside();
    }
    all_stopped(&mut stopped).await;

    let mut stats = Stats::default();
    let mut last = measure_from;
    for m in measured {
        let m = m.lock().unwrap_or_else(|p| p.into_inner());
        stats.merge(&m.stats);
        last = last.max(m.last.unwrap_or(measure_from));
    }
    let elapsed = match (schedule.end, schedule.load.rate) {
        // Closed loop with a duration: completions inside the window, over the window.
        (Some(end), None) if !interrupted => end - measure_from,
        _ => last.saturating_duration_since(measure_from),
    };
    Outcome {
        stats,
        elapsed,
        interrupted,
    }
}

/// Waits until every worker has ended or been dropped.
async fn all_stopped(stopped: &mut [oneshot::Receiver<()>]) {
    for done in stopped {
        if !done.is_terminated() {
            let _ = done.await;
        }
    }
}

/// One worker: calls until the run is over.
async fn worker(
    s: Arc<Schedule>,
    caller: Caller,
    progress: Arc<Progress>,
    out: Arc<Mutex<Measured>>,
) {
    let closed_loop_end = s.end.filter(|_| s.load.rate.is_none());
    while !s.done.load(Relaxed) {
        let due = match s.load.rate {
            Some(rate) => {
                let i = s.tickets.fetch_add(1, Relaxed);
                let due = s.start + Duration::from_secs_f64(i as f64 / rate);
                if s.end.is_some_and(|end| due >= end) {
                    break;
                }
                // Not tokio's timer: it would send the call up to a couple of milliseconds
                // after `due`, and the call's latency is counted from `due`.
                fanout_timer::sleep_until(due.into_std()).await;
                due
            }
            None => Instant::now(),
        };
        // In rate mode a call belongs to the window it was due in; in a closed loop, to the
        // window it completes in.
        let counted_by_due = s.load.rate.is_some() && due >= s.measure_from;
        if let Some(n) = s.load.requests {
            let may_count = counted_by_due || (s.load.rate.is_none() && due >= s.measure_from);
            if may_count && s.measured.fetch_add(1, Relaxed) >= n {
                break;
            }
        }
        let done = caller.invoke(s.load.timeout).await;
        let finished = Instant::now();
        let measured = match s.load.rate {
            Some(_) => counted_by_due,
            None => finished >= s.measure_from && closed_loop_end.is_none_or(|end| finished < end),
        };
        if measured {
            let mut m = out.lock().unwrap_or_else(|p| p.into_inner());
            m.stats.record(done.code, finished - due);
            if let Some(t) = done.first_result {
                m.stats.record_first_result(t);
            }
            m.stats.degraded += u64::from(done.degraded);
            m.stats.stream_results += done.results;
            m.last = Some(finished);
            drop(m);
            progress.calls.fetch_add(1, Relaxed);
            if done.code != Code::Ok {
                progress.errors.fetch_add(1, Relaxed);
            }
        }
        if done.code != Code::Ok && caller.conn().is_closed() {
            // The target closed the connection or went away: every call over it now fails
            // at once. Count that at a client's reconnect pace rather than a million times a
            // second (the loadgen does not reconnect; the report shows UNAVAILABLE).
            sleep(CLOSED_CONNECTION_PAUSE).await;
        }
    }
}
