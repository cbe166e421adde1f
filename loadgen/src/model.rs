//! The records the loadgen's stages pass on, and nothing else: what to call and how much
//! ([`Rpc`], [`Load`], from the flags), what the workers measured ([`Outcome`], with live
//! [`Progress`] on the way), and the reports made of it ([`RunReport`], [`CompareReport`] and
//! its [`Row`]s), which the table, the JSON and the chart render. Every stage depends on this
//! module and this module on none of them, so data flows one way (oha's `result_data.rs`).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::time::Duration;

use serde::Serialize;

use crate::stats::{Percentiles, Stats};
use crate::theory::Bound;

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
    /// Worker tasks: callers in a closed loop, the most outstanding calls at a rate.
    pub concurrency: usize,
    /// Calls per second (open loop); `None` for a closed loop.
    pub rate: Option<f64>,
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

/// Live counters for the progress display: the workers add, the monitor reads.
#[derive(Debug, Default)]
pub struct Progress {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    /// Set once the warm-up is over.
    pub measuring: AtomicBool,
}

/// The result of a run.
#[derive(Debug)]
pub struct Outcome {
    pub stats: Stats,
    /// The measured window: from the end of the warm-up to the end of the run.
    pub elapsed: Duration,
    /// Stopped early by Ctrl-C.
    pub interrupted: bool,
}

impl Outcome {
    /// Calls per second over the measured window.
    pub fn calls_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.stats.calls() as f64 / secs
        } else {
            0.0
        }
    }
}

/// The report of one `loadgen run`; `calls_per_sec` and the percentiles at the top level.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: String,
    pub rpc: String,
    /// "closed" (callers) or "rate" (open loop).
    pub load: &'static str,
    pub concurrency: u32,
    pub rate: Option<f64>,
    pub connections: u32,
    /// Length of the measured window, in seconds.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub interrupted: bool,
    pub calls: u64,
    pub errors: u64,
    /// Successful aggregate calls in which at least one backend failed or timed out.
    pub degraded: u64,
    pub calls_per_sec: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub status_counts: BTreeMap<String, u64>,
    /// Streams only.
    pub stream: Option<StreamReport>,
    pub theory: Option<Bound>,
    /// calls_per_sec / theory.calls_per_sec.
    pub efficiency: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
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
