//! The flags of the scenarios, `tail`, `overload` and `resilience`: each runs on local deployments of its
//! own, so its flags describe the backends and the load, and the aggregator's policies are the
//! scenario's subject.

use std::path::PathBuf;
use std::time::Duration;

use aggregator::HedgeAfter;
use backend::latency::LatencySpec;
use clap::{Args, ValueEnum};
use fanout_proto::cli::{duration, positive_duration};

use super::RuntimeArgs;

/// A strategy against slow answers, in `loadgen tail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// Wait for every answer, however late (attempt timeout and deadline 5s, no retries).
    None,
    /// Give up an attempt after --retry-timeout and retry it (the aggregator's retry defaults:
    /// 3 attempts, backoff from 20ms, a 20% budget).
    Retry,
    /// Send a second attempt when the first has not answered after --hedge-after; the first
    /// answer wins (a 5% budget).
    Hedge,
    /// The same, after --hedge-percentile of the backend's recent answer times.
    HedgeAdaptive,
}

impl Strategy {
    pub fn name(self) -> &'static str {
        match self {
            Strategy::None => "none",
            Strategy::Retry => "retry",
            Strategy::Hedge => "hedge",
            Strategy::HedgeAdaptive => "hedge-adaptive",
        }
    }
}

/// `loadgen tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// The backends' latency: a heavy tail, `tail:BASE,p=P,SLOW` (a call takes SLOW with
    /// probability P, BASE otherwise), or any other spec `run` takes.
    #[arg(
        long,
        env = "LOADGEN_LATENCY",
        default_value = "tail:10ms,p=0.02,500ms"
    )]
    pub latency: LatencySpec,

    /// Fan-outs to measure: how many backends each call goes to (comma-separated).
    #[arg(long, env = "LOADGEN_TAIL_BACKENDS", value_delimiter = ',', default_value = "1,3,10", value_parser = clap::value_parser!(u32).range(1..=32))]
    pub backends: Vec<u32>,

    /// Strategies to measure (comma-separated), each on a fresh deployment.
    #[arg(
        long,
        env = "LOADGEN_STRATEGIES",
        value_enum,
        value_delimiter = ',',
        default_value = "none,retry,hedge,hedge-adaptive"
    )]
    pub strategies: Vec<Strategy>,

    /// Aggregate calls per second, open loop (latencies from each call's due time).
    #[arg(long, env = "LOADGEN_RATE", default_value_t = 200.0, value_parser = super::load::parse_rate)]
    pub rate: f64,

    /// How long to measure each strategy. The tail is rare by definition: p99.9 needs
    /// thousands of calls (200/s for 10s is 2,000: the third-slowest call sets it).
    #[arg(long, short = 'd', env = "LOADGEN_DURATION", default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,

    /// Calls made before measuring each strategy (connections warm, the adaptive hedge's
    /// histogram filled).
    #[arg(long, env = "LOADGEN_WARMUP", default_value = "2s", value_parser = duration)]
    pub warmup: Duration,

    /// The `retry` strategy's attempt timeout (the aggregator's --attempt-timeout).
    #[arg(long, env = "LOADGEN_RETRY_TIMEOUT", default_value = "20ms", value_parser = positive_duration)]
    pub retry_timeout: Duration,

    /// The `hedge` strategy's delay (the aggregator's --hedge-after): best a little above the
    /// backends' usual answer time. Several (comma-separated) measure one `hedge` row each, to
    /// find the best.
    #[arg(long, env = "LOADGEN_HEDGE_AFTER", value_delimiter = ',', default_value = "20ms", value_parser = positive_duration)]
    pub hedge_after: Vec<Duration>,

    /// The `hedge-adaptive` strategy's percentile (the aggregator's --hedge-after pNN).
    #[arg(long, env = "LOADGEN_HEDGE_PERCENTILE", default_value = "p95", value_parser = parse_percentile)]
    pub hedge_percentile: HedgeAfter,

    /// Hedges per attempt at most, for `hedge` and `hedge-adaptive` (the aggregator's
    /// --max-hedges): with one, a backend holds a call up when two attempts are slow (p^2);
    /// with two, when three are (p^3).
    #[arg(long, env = "LOADGEN_MAX_HEDGES", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub max_hedges: u32,

    /// Servers per backend: a hedge or a retry goes to another one when there are several.
    #[arg(long, env = "LOADGEN_REPLICAS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: u32,

    /// Runtime worker threads of each local backend server.
    #[arg(long, env = "LOADGEN_BACKEND_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub backend_workers: u32,

    /// Runtime worker threads of the local aggregator.
    #[arg(long, env = "LOADGEN_AGGREGATOR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub aggregator_workers: u32,

    /// Where to write the JSON report.
    #[arg(long, env = "LOADGEN_JSON", default_value = "out/tail.json")]
    pub json: PathBuf,

    /// Where to write the chart (SVG): latency by percentile, a panel per fan-out, a line per
    /// strategy.
    #[arg(long, env = "LOADGEN_CHART", default_value = "out/tail.svg")]
    pub chart: PathBuf,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `pNN` only: a fixed delay is --hedge-after's.
fn parse_percentile(s: &str) -> Result<HedgeAfter, String> {
    match s.parse::<HedgeAfter>()? {
        p @ HedgeAfter::Percentile(_) => Ok(p),
        HedgeAfter::Fixed(_) => Err(format!(
            "`{s}` is a delay; --hedge-percentile takes a percentile like p95 (the fixed delay \
             is --hedge-after)"
        )),
    }
}

/// A policy of limits, in `loadgen overload`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LimitPolicy {
    /// --backend-concurrency and --max-in-flight as --fixed gives them.
    Fixed,
    /// Both `auto`: the aggregator's defaults.
    Adaptive,
}

/// `loadgen overload`.
#[derive(Debug, Clone, Args)]
pub struct OverloadArgs {
    /// The backends' latency with no queue.
    #[arg(long, env = "LOADGEN_LATENCY", default_value = "100ms")]
    pub latency: LatencySpec,

    /// Backends each call fans out to.
    #[arg(long, env = "LOADGEN_LOCAL_BACKENDS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    pub backends: u32,

    /// Calls each backend works on at once (its --capacity); the rest wait their turn, so
    /// one backend serves at most CAPACITY / latency calls/s: the deployment's capacity.
    #[arg(long, env = "LOADGEN_CAPACITY", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub capacity: u32,

    /// The offered load's steps, as multiples of the capacity (comma-separated).
    #[arg(long, env = "LOADGEN_STEPS", value_delimiter = ',', default_value = "0.5,1,2,5,10", value_parser = parse_multiple)]
    pub steps: Vec<f64>,

    /// The policies to measure (comma-separated), each on a fresh deployment: `fixed`
    /// (--fixed's limits) and `adaptive` (the defaults: `auto`).
    #[arg(
        long,
        env = "LOADGEN_POLICIES",
        value_enum,
        value_delimiter = ',',
        default_value = "fixed,adaptive"
    )]
    pub policies: Vec<LimitPolicy>,

    /// The fixed limits measured beside the adaptive ones: the aggregator's
    /// --backend-concurrency and --max-in-flight (its defaults before they became `auto`).
    #[arg(long, env = "LOADGEN_FIXED", default_value = "100,1000", value_parser = parse_fixed)]
    pub fixed: (u32, u32),

    /// How long to measure each step.
    #[arg(long, short = 'd', env = "LOADGEN_DURATION", default_value = "5s", value_parser = positive_duration)]
    pub duration: Duration,

    /// Calls made at a step's rate before measuring it (the limits move to it).
    #[arg(long, env = "LOADGEN_WARMUP", default_value = "2s", value_parser = duration)]
    pub warmup: Duration,

    /// The slowdown phase: the offered load (a multiple of the capacity) under which the
    /// backends' latency doubles halfway through, the limit sampled throughout. 0: skip it.
    #[arg(long, env = "LOADGEN_SLOWDOWN_AT", default_value = "2", value_parser = parse_multiple_or_zero)]
    pub slowdown_at: f64,

    /// How long each half of the slowdown phase lasts.
    #[arg(long, env = "LOADGEN_SLOWDOWN_FOR", default_value = "10s", value_parser = positive_duration)]
    pub slowdown_for: Duration,

    /// Runtime worker threads of each local backend server.
    #[arg(long, env = "LOADGEN_BACKEND_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub backend_workers: u32,

    /// Runtime worker threads of the local aggregator.
    #[arg(long, env = "LOADGEN_AGGREGATOR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub aggregator_workers: u32,

    /// Where to write the JSON report.
    #[arg(long, env = "LOADGEN_JSON", default_value = "out/overload.json")]
    pub json: PathBuf,

    /// Where to write the chart (SVG): goodput and admitted p99 per step, and the limit through
    /// the slowdown.
    #[arg(long, env = "LOADGEN_CHART", default_value = "out/overload.svg")]
    pub chart: PathBuf,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// A multiple of the capacity: above 0, at most 100.
fn parse_multiple(s: &str) -> Result<f64, String> {
    match s.trim().trim_end_matches('x').parse::<f64>() {
        Ok(x) if x > 0.0 && x <= 100.0 => Ok(x),
        _ => Err(format!(
            "`{s}` is not a multiple of the capacity: write a number above 0 and at most 100, \
             e.g. 0.5 or 10"
        )),
    }
}

fn parse_multiple_or_zero(s: &str) -> Result<f64, String> {
    if s.trim().parse::<f64>() == Ok(0.0) {
        return Ok(0.0);
    }
    parse_multiple(s)
}

/// `BACKEND_CONCURRENCY,MAX_IN_FLIGHT`, both at least 1.
fn parse_fixed(s: &str) -> Result<(u32, u32), String> {
    let bad = || {
        format!(
            "`{s}` is not two limits: write --backend-concurrency and --max-in-flight as \
             `N,M`, both at least 1, e.g. 100,1000"
        )
    };
    let (n, m) = s.split_once(',').ok_or_else(bad)?;
    match (n.trim().parse::<u32>(), m.trim().parse::<u32>()) {
        (Ok(n), Ok(m)) if n > 0 && m > 0 => Ok((n, m)),
        _ => Err(bad()),
    }
}

/// A row of `loadgen resilience`: what the deployment is put through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Condition {
    /// Healthy backends at half the capacity.
    #[value(name = "healthy-50")]
    Healthy50,
    /// Healthy backends at 80% of the capacity.
    #[value(name = "healthy-80")]
    Healthy80,
    /// A fresh aggregator's first calls: 80% of the capacity from the first instant, plus a
    /// burst of twice the calls a backend works on at once at that instant; no warm-up.
    ColdStart,
    /// Backends with a heavy tail (--tail-latency) at --tail-rate.
    HeavyTail,
    /// Each backend in three replicas; one replica of `b1` 10x slower.
    ReplicaSlow,
    /// Each backend in three replicas; one replica of `b1` killed halfway through the window.
    ReplicaKilled,
    /// `b3` silent (stopped, its connections open) from before the warm-up.
    BackendSilent,
    /// Nothing listening at `b3`'s address: connections refused.
    BackendRefusing,
    /// Every backend twice as slow halfway through the window (at 40%, so 80% after).
    LatencyDoubling,
    /// Every backend fails 20% of its calls.
    #[value(name = "failures-20")]
    Failures20,
    /// Ten times the capacity offered.
    #[value(name = "overload-10x")]
    Overload10x,
    /// Blocking backends (--mode blocking, 2 workers: a fixed capacity) offered twice what
    /// they serve.
    #[value(name = "blocking-2x")]
    Blocking2x,
}

/// A column of `loadgen resilience`: the aggregator's policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ValueEnum)]
pub enum Configuration {
    /// The aggregator's defaults.
    Defaults,
    /// The defaults with the old fixed limits: --backend-concurrency 100 --max-in-flight 1000.
    Fixed,
    /// No protection: one attempt, no hedging, limits too high to refuse anything.
    Off,
    /// The defaults with hedging after the backends' p95 (--hedge-after p95).
    #[value(name = "defaults+hedge")]
    DefaultsHedge,
}

/// `loadgen resilience`.
#[derive(Debug, Clone, Args)]
pub struct ResilienceArgs {
    /// The rows to measure (comma-separated), in this order.
    #[arg(
        long,
        env = "LOADGEN_SCENARIOS",
        value_enum,
        value_delimiter = ',',
        default_value = "healthy-50,healthy-80,cold-start,heavy-tail,replica-slow,\
                         replica-killed,backend-silent,backend-refusing,latency-doubling,\
                         failures-20,overload-10x,blocking-2x"
    )]
    pub scenarios: Vec<Condition>,

    /// The columns to measure (comma-separated), in this order.
    #[arg(
        long,
        env = "LOADGEN_CONFIGS",
        value_enum,
        value_delimiter = ',',
        default_value = "defaults,fixed,off,defaults+hedge"
    )]
    pub configs: Vec<Configuration>,

    /// How long to measure each cell (each on a fresh local deployment).
    #[arg(long, short = 'd', env = "LOADGEN_DURATION", default_value = "3s", value_parser = positive_duration)]
    pub duration: Duration,

    /// Calls made at a cell's rate before measuring it (none on a cold start).
    #[arg(long, env = "LOADGEN_WARMUP", default_value = "1s", value_parser = duration)]
    pub warmup: Duration,

    /// The backends' latency, in every row but heavy-tail.
    #[arg(long, env = "LOADGEN_LATENCY", default_value = "20ms")]
    pub latency: LatencySpec,

    /// Calls a backend works on at once (its --capacity; the rest wait their turn): the
    /// deployment serves CAPACITY / latency calls/s, and the rows' loads are multiples of that.
    /// Replicas get a third of it each, rounded up.
    #[arg(long, env = "LOADGEN_CAPACITY", default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub capacity: u32,

    /// The backends' latency in heavy-tail.
    #[arg(
        long,
        env = "LOADGEN_TAIL_LATENCY",
        default_value = "tail:10ms,p=0.02,500ms"
    )]
    pub tail_latency: LatencySpec,

    /// Aggregate calls per second in heavy-tail (its backends have no capacity limit).
    #[arg(long, env = "LOADGEN_TAIL_RATE", default_value_t = 200.0, value_parser = super::load::parse_rate)]
    pub tail_rate: f64,

    /// Runtime worker threads of each local backend server (blocking-2x's have 2: its point).
    #[arg(long, env = "LOADGEN_BACKEND_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub backend_workers: u32,

    /// Runtime worker threads of the local aggregator.
    #[arg(long, env = "LOADGEN_AGGREGATOR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub aggregator_workers: u32,

    /// Where to write the JSON report: {"cells": [...], "rules": [...]}.
    #[arg(long, env = "LOADGEN_JSON", default_value = "out/resilience.json")]
    pub json: PathBuf,

    /// Where to write the heatmap (SVG): a row per scenario, a column per configuration, each
    /// cell coloured by its goodput against the row's best.
    #[arg(long, env = "LOADGEN_CHART", default_value = "out/resilience.svg")]
    pub chart: PathBuf,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}
