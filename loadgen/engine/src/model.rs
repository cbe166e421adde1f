//! The records the loadgen's stages pass on, and nothing else: what to call and how much
//! ([`Rpc`], [`Load`], from the flags), what the workers measured ([`Outcome`], with live
//! [`Progress`] on the way), and the reports made of it ([`RunReport`], [`CompareReport`] and
//! its [`Row`]s), which the table, the JSON and the chart render. Every stage depends on this
//! module and this module on none of them, so data flows one way (oha's `result_data.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::bound::Bound;
use crate::stats::{Percentiles, Stats};

/// Which call the load makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rpc {
    /// fanout.v1.Aggregator/Aggregate: all results at once.
    Aggregate,
    /// fanout.v1.Aggregator/AggregateStream: results as they arrive, then a summary.
    Stream,
    /// fanout.v1.Backend/Fetch, straight at a backend.
    Fetch,
}

impl Rpc {
    /// Its name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Rpc::Aggregate => "aggregate",
            Rpc::Stream => "stream",
            Rpc::Fetch => "fetch",
        }
    }
}

/// How much load, for how long.
#[derive(Debug, Clone)]
pub struct Load {
    pub shape: Shape,
    /// How long to measure (after the warm-up).
    pub duration: Option<Duration>,
    /// How many calls to measure (after the warm-up).
    pub requests: Option<u64>,
    /// Calls during this first stretch are made but not measured.
    pub warmup: Duration,
    /// Bound on one call (sent as grpc-timeout too). None: calls are bounded only by the end of
    /// the run, and nothing per call costs a timer.
    pub timeout: Option<Duration>,
}

/// Closed or open loop: which one decides what a slow target does to the load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shape {
    /// `callers` callers, each calling again as soon as its call returns: a slow target gets
    /// fewer calls per second (the load adapts to it, as a fixed pool of users would).
    Closed { callers: usize },
    /// `rate` calls per second on a fixed schedule, whatever the target does: calls
    /// outstanding grow on demand up to `max_outstanding`; a call falling due beyond that is
    /// dropped and counted. After the schedule, calls still outstanding get `drain` to finish.
    Open {
        rate: f64,
        max_outstanding: usize,
        drain: Duration,
    },
}

impl Shape {
    /// The rate asked for, in an open loop.
    pub fn rate(&self) -> Option<f64> {
        match *self {
            Shape::Open { rate, .. } => Some(rate),
            Shape::Closed { .. } => None,
        }
    }

    /// Callers (closed loop) or the most calls outstanding (open loop): C in the theory.
    pub fn concurrency(&self) -> usize {
        match *self {
            Shape::Closed { callers } => callers,
            Shape::Open {
                max_outstanding, ..
            } => max_outstanding,
        }
    }
}

/// Live counters for the progress display: the workers add, the monitor reads.
#[derive(Debug, Default)]
pub struct Progress {
    /// Measured calls answered.
    pub calls: AtomicU64,
    /// Of those, failed.
    pub errors: AtomicU64,
    /// Open loop: calls sent, warm-up included.
    pub sent: AtomicU64,
    /// Open loop: calls that fell due with --max-outstanding calls outstanding, warm-up
    /// included.
    pub dropped: AtomicU64,
    /// Calls sent and not answered yet. In an open loop this is also what the cap is checked
    /// against.
    pub outstanding: AtomicUsize,
    /// Set once the warm-up is over.
    pub measuring: AtomicBool,
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    /// The calls of the window: in a closed loop those that completed in it, in an open loop
    /// those that fell due in it (and were answered, however late).
    pub stats: Stats,
    /// The measured window: from the end of the warm-up to the end of the run (closed loop),
    /// or of the schedule (open loop).
    pub elapsed: Duration,
    /// Answers that arrived within the window: the throughput achieved. In a closed loop the
    /// calls of `stats`; in an open loop it can fall short of them when the target is behind
    /// (the calls due are answered after the window, late).
    pub answered: u64,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
    /// Open loop only: what happened to the calls of the schedule.
    pub open: Option<OpenLoop>,
}

impl Outcome {
    /// Answers per second over the measured window.
    pub fn calls_per_sec(&self) -> f64 {
        per_sec(self.answered, self.elapsed.as_secs_f64())
    }
}

/// `n` over `secs`, 0 for an empty window.
pub fn per_sec(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// An open loop's account of its measured window: every call that fell due was sent or
/// dropped, and every call sent was answered (`calls`) or cut off at the end.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OpenLoop {
    /// Calls per second asked for.
    pub offered_rate: f64,
    /// Calls that fell due in the window.
    pub due: u64,
    /// Of those, sent.
    pub sent: u64,
    /// Of those, not sent: they fell due with --max-outstanding calls already outstanding.
    /// A count above zero means the target was slower than the offer (or the cap too low): the
    /// achieved rate is then below the offered one and the latencies are of the calls that
    /// could be sent.
    pub dropped: u64,
    /// Sent, but still unanswered when the drain after the schedule ran out (or at Ctrl-C):
    /// abandoned, in no latency and no status count.
    pub cut_off: u64,
    /// The most calls outstanding at once, and the cap.
    pub peak_outstanding: u64,
    pub max_outstanding: u64,
    /// How long calls outstanding at the end of the schedule were given, in seconds.
    pub drain_s: f64,
}

/// One endpoint (replica) of a backend behind the aggregator, over the measured window: read
/// from the aggregator's `Stats` before and after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EndpointShare {
    pub backend: String,
    pub address: String,
    /// Backend calls it answered in the window.
    pub served: u64,
    /// Backend calls that failed there in the window.
    pub failed: u64,
    /// Its share of the calls its backend's endpoints served in the window, 0 to 1.
    pub share: f64,
    /// Times outlier ejection took it out of the rotation in the window.
    pub ejections: u64,
}

/// The histograms of a report in HdrHistogram's portable form (V2, deflated, base64), values
/// in microseconds: what `loadgen merge` adds up exactly.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Histograms {
    pub encoding: String,
    pub latency: String,
    /// Streams only.
    pub first_result: Option<String>,
}

/// The report of one `loadgen run` (or of several merged); `calls_per_sec` and the percentiles
/// at the top level. Read back by `loadgen merge`, so every field is both written and read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunReport {
    pub target: String,
    pub rpc: String,
    /// "closed" (callers) or "rate" (open loop).
    pub load: String,
    /// Closed loop: callers. Open loop: the most calls outstanding allowed.
    pub concurrency: u32,
    pub rate: Option<f64>,
    pub connections: u32,
    /// When the measured window began (RFC 3339, UTC): several runs merged should overlap.
    #[serde(default)]
    pub started_at: Option<String>,
    /// Length of the measured window, in seconds.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub interrupted: bool,
    /// The calls measured, with any status: closed loop, those completed in the window; open
    /// loop, those due in the window and answered (however late: see `calls_per_sec`).
    pub calls: u64,
    pub errors: u64,
    /// Successful aggregate calls in which at least one backend failed or timed out.
    pub degraded: u64,
    /// Answers received during the window, per second of it: the throughput achieved. In an
    /// open loop below the offered rate when the target falls behind.
    pub calls_per_sec: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub status_counts: BTreeMap<String, u64>,
    /// Open loop only: calls due, sent, dropped and cut off.
    #[serde(default)]
    pub open_loop: Option<OpenLoop>,
    /// Streams only.
    pub stream: Option<StreamReport>,
    /// Behind an aggregator: each backend endpoint's share of the calls in the window.
    #[serde(default)]
    pub endpoints: Vec<EndpointShare>,
    pub theory: Option<Bound>,
    /// Every bound that applied (theory is the tightest), for `merge` to combine.
    #[serde(default)]
    pub theory_bounds: Vec<Bound>,
    /// calls_per_sec / theory.calls_per_sec.
    pub efficiency: Option<f64>,
    /// The latency histograms themselves, for `merge`.
    #[serde(default)]
    pub histograms: Option<Histograms>,
    /// A merged report: the reports it adds up.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamReport {
    /// Time to the first result event.
    pub first_result: Percentiles,
    pub results: u64,
    pub results_per_sec: f64,
}

/// One configuration's measurement in `compare`, beside its bound.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub fanout: String,
    pub backend_mode: String,
    pub concurrency: u32,
    /// Calls completed in the measured window, per second of it.
    pub calls_per_sec: f64,
    /// Closed loop only, a cross-check: C / mean latency (the interactive response time law).
    /// It agrees with calls_per_sec in a steady state and is less sensitive to bursts.
    pub littles_law_calls_per_sec: Option<f64>,
    pub theory_calls_per_sec: f64,
    /// calls_per_sec / theory_calls_per_sec.
    pub efficiency: f64,
    /// What sets the bound.
    pub limit: String,
    pub formula: String,
    /// One call's time with no queueing (R), in milliseconds.
    pub call_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub calls: u64,
    pub errors: u64,
    /// Successful calls in which some backend failed or timed out.
    pub degraded: u64,
    /// The measured window and the warm-up actually used for this configuration (stretched for
    /// slow configurations; see `compare::windows`).
    pub duration_s: f64,
    pub warmup_s: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CompareReport {
    /// "local" or the target's URL.
    pub target: String,
    pub latency: String,
    pub backends: usize,
    pub backend_workers: u32,
    pub aggregator_workers: u32,
    pub cores: usize,
    pub concurrency: u32,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub interrupted: bool,
    pub scenarios: Vec<Row>,
}

/// One strategy against one fan-out in `loadgen tail`.
#[derive(Debug, Clone, Serialize)]
pub struct TailRow {
    /// Backends each call fans out to.
    pub backends: usize,
    /// `none`, `retry`, `hedge` or `hedge-adaptive`.
    pub strategy: String,
    /// The aggregator flags that make it, e.g. `--hedge-after 20ms`.
    pub flags: String,
    pub calls: u64,
    pub errors: u64,
    /// Successful calls in which some backend failed or timed out.
    pub degraded: u64,
    pub calls_per_sec: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    /// Backend attempts beyond one per backend per call, as a share of those: what the
    /// strategy costs the backends (from the aggregator's Stats around the run).
    pub extra_backend_calls: f64,
    pub retries: u64,
    pub hedges: u64,
    pub hedges_won: u64,
    pub hedges_refused: u64,
    /// The theory: the probability that a call waits for a slow answer, when each backend is
    /// slow with probability p and the strategy gives it k attempts (a retry or a hedge after
    /// a slow one): 1 - (1 - p^k)^backends.
    pub tail_odds: Option<f64>,
    /// The latency histogram (see `Histograms::encoding`).
    pub histogram: String,
}

/// The whole `loadgen tail`.
#[derive(Debug, Clone, Serialize)]
pub struct TailReport {
    pub latency: String,
    /// The chance that one backend call is slow, for a `tail:` latency.
    pub slow_probability: Option<f64>,
    pub rate: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub replicas: usize,
    pub encoding: String,
    pub interrupted: bool,
    pub rows: Vec<TailRow>,
}

/// One step of offered load under one policy in `loadgen overload`.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadStep {
    /// `fixed` or `adaptive`.
    pub policy: String,
    /// The offered load as a multiple of the deployment's capacity.
    pub multiple: f64,
    pub offered_per_sec: f64,
    pub calls: u64,
    /// Calls due in the window answered OK with every backend's result, per second of the
    /// window: in a steady state the rate of good answers (while a line builds up, calls due
    /// in the window are answered after it, and this runs ahead of the answers).
    pub goodput_per_sec: f64,
    /// goodput / capacity.
    pub goodput_share: f64,
    /// Calls shed by the aggregator (RESOURCE_EXHAUSTED), as a share of the calls.
    pub shed_share: f64,
    /// Calls answered OK without some backend's result (that backend failed, timed out or was
    /// over its limit), as a share of the calls.
    pub degraded_share: f64,
    /// Calls failed otherwise (DEADLINE_EXCEEDED, ...), as a share of the calls.
    pub failed_share: f64,
    /// Latency of the calls admitted (every status but RESOURCE_EXHAUSTED).
    pub admitted_p50_ms: f64,
    pub admitted_p99_ms: f64,
    /// The binding concurrency limit at the end of the step (the smallest backend's; an open
    /// adaptive one is its ceiling).
    pub limit: f64,
    /// Backend calls failed fast over a backend's limit during the step (all backends).
    pub backend_over_limit: u64,
    /// Resident memory of this process (the loadgen and the local deployment) after the step.
    pub rss_mib: Option<f64>,
}

/// The limits read every 250 ms through the slowdown.
#[derive(Debug, Clone, Serialize)]
pub struct LimitSample {
    /// Seconds since the slowdown phase began.
    pub t_s: f64,
    /// The binding concurrency limit (the smallest backend's).
    pub limit: f64,
    /// Backend calls in flight, and waiting for a slot (all backends).
    pub in_flight: u64,
    pub queued: u64,
}

/// One policy through the slowdown: half the phase at the backends' latency, half at twice it.
#[derive(Debug, Clone, Serialize)]
pub struct Slowdown {
    pub policy: String,
    pub offered_per_sec: f64,
    /// When the latency doubled, in seconds since the phase began.
    pub slowed_at_s: f64,
    /// The limit before (median of the first half's last 3 s) and after (of the second half's
    /// last 3 s).
    pub limit_before: f64,
    pub limit_after: f64,
    /// How long after the slowdown the limit's median over a second came back within the range
    /// it keeps at the end (its 1 s medians over the last 3 s, ±10%) and stayed there for 2 s;
    /// `None`: it never did, or the limit is fixed.
    pub settled_after_s: Option<f64>,
    /// Admitted calls' p99 and goodput in each half.
    pub admitted_p99_before_ms: f64,
    pub admitted_p99_after_ms: f64,
    pub goodput_before_per_sec: f64,
    pub goodput_after_per_sec: f64,
    pub samples: Vec<LimitSample>,
}

/// The whole `loadgen overload`.
#[derive(Debug, Clone, Serialize)]
pub struct OverloadReport {
    pub latency: String,
    pub backends: usize,
    /// Each backend's --capacity.
    pub backend_capacity: u32,
    /// Aggregate calls per second the deployment can serve: capacity / mean latency.
    pub capacity_per_sec: f64,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub interrupted: bool,
    pub steps: Vec<OverloadStep>,
    pub slowdowns: Vec<Slowdown>,
}
