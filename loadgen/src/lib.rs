//! `loadgen`: measures fanout under load, against theory.
//!
//! The parts, split the way the oha load generator splits them:
//! - [`cli`]: the flags;
//! - [`workers`]: the callers (closed loop, or open loop at a rate with coordinated-omission
//!   correction), each with its own statistics;
//! - [`stats`]: HDR histograms and status counts, merged at the end;
//! - [`theory`]: the bound each configuration is held against (Little's law and friends);
//! - [`report`]: the table and the JSON;
//! - [`chart`]: the SVG chart of `compare`;
//! - [`monitor`]: the live progress line;
//! - [`deploy`]: the local deployment started when no `--target` is given.
//!
//! [`run`] is one scenario, [`compare`] the matrix.
#![forbid(unsafe_code)]

pub mod chart;
pub mod cli;
pub mod compare;
pub mod conn;
pub mod deploy;
pub mod grpc;
pub mod monitor;
pub mod report;
pub mod stats;
pub mod theory;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail};
use fanout_proto::v1::{AggregateRequest, Fanout, FetchRequest, Mode, ServerStats, StatsRequest};
use tokio::sync::watch;
use tonic::Code;

use crate::cli::{Rpc, RunArgs};
pub use crate::compare::compare;
use crate::conn::Conn;
use crate::deploy::{Deployment, DeploymentSpec};
use crate::monitor::Monitor;
use crate::report::{RunReport, StreamReport};
use crate::stats::Percentiles;
use crate::theory::Setup;
use crate::workers::{Caller, Load, Outcome, Progress};
use fanout_proto::paths;

/// The number of cores, for the CPU-bound theory.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// `host:port` becomes `http://host:port`.
pub fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Opens `n` HTTP/2 connections to `url`, failing within seconds with a message that says what
/// to do when nothing answers there.
pub async fn connect(url: &str, n: u32) -> anyhow::Result<Vec<Conn>> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| anyhow!("`{url}` is not a URL ({e}); write it like http://127.0.0.1:50051"))?;
    let mut channels = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let channel = Conn::open(&uri, Duration::from_secs(3))
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot reach {url}: {}. Is the server running there? Without --target, \
                 loadgen starts a local deployment of its own.",
                    error_chain(e.as_ref())
                )
            })?;
        channels.push(channel);
    }
    Ok(channels)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

/// Checks that `conn` leads to the kind of fanout server `rpc` needs.
pub async fn probe(url: &str, conn: &Conn, rpc: Rpc) -> anyhow::Result<()> {
    let (service, path) = match rpc {
        Rpc::Fetch => ("fanout.v1.Backend", paths::BACKEND_STATS),
        Rpc::Aggregate | Rpc::Stream => ("fanout.v1.Aggregator", paths::AGGREGATOR_STATS),
    };
    let answer = conn
        .call::<ServerStats>(path, &StatsRequest {}, Duration::from_secs(5))
        .await;
    match answer {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::Unimplemented => bail!(
            "{url} speaks gRPC but does not serve {service}: point --target at {}",
            match rpc {
                Rpc::Fetch => "a backend (or use --rpc aggregate for an aggregator)",
                _ => "an aggregator (or use --rpc fetch for a backend)",
            }
        ),
        Err(s) => bail!(
            "{url} is not a working {service}: {:?}: {}",
            s.code(),
            s.message()
        ),
    }
}

/// Makes one call of the exact kind the load will make, so a request the target refuses
/// (overrides not allowed, unknown backend) stops the run with the target's own reason.
async fn probe_call(caller: &Caller) -> anyhow::Result<()> {
    let status = caller.once().await.err();
    match status {
        Some(s)
            if matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::PermissionDenied
                    | Code::Unimplemented
                    | Code::Unauthenticated
            ) =>
        {
            bail!(
                "the target refused the request: {:?}: {}",
                s.code(),
                s.message()
            )
        }
        _ => Ok(()),
    }
}

/// Builds the callers for `rpc`, one per connection; `timeout` is sent as each call's
/// `grpc-timeout`.
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

/// Runs `load` with a progress display labelled `label`.
pub async fn measure(
    label: String,
    load: Load,
    callers: Vec<Caller>,
    stop: watch::Receiver<bool>,
) -> Outcome {
    let progress = Arc::new(Progress::default());
    let monitor = Monitor::start(label, progress.clone());
    let outcome = workers::drive(load, callers, progress, stop).await;
    monitor.finish();
    outcome
}

/// `loadgen run`: one scenario.
pub async fn run(args: RunArgs, stop: watch::Receiver<bool>) -> anyhow::Result<RunReport> {
    let local = &args.local;
    let mode: Option<Mode> = args.mode.map(Into::into);
    let fanout: Option<Fanout> = args.fanout.map(Into::into);
    if args.rpc == Rpc::Fetch && (fanout.is_some() || !args.backends.is_empty()) {
        bail!("--fanout and --backends apply to aggregator calls, not to --rpc fetch");
    }

    // Either a deployment of our own, configured by the flags, or the given target, driven by
    // per-request overrides.
    let (deployment, target, overrides) = match &args.target {
        Some(t) => (None, normalize_url(t), true),
        None => {
            let spec = DeploymentSpec {
                backends: local.local_backends as usize,
                latency: local.latency.clone(),
                mode: mode.unwrap_or(Mode::Async),
                backend_workers: local.backend_workers as usize,
                fanout: (args.rpc != Rpc::Fetch).then(|| fanout.unwrap_or(Fanout::Concurrent)),
                aggregator_workers: local.aggregator_workers as usize,
            };
            eprintln!("starting a local deployment: {}", describe(&spec));
            let d = Deployment::start(&spec).await?;
            let target = d.target();
            (Some(d), target, false)
        }
    };
    let result = run_against(&args, &target, overrides, stop).await;
    if let Some(d) = deployment {
        d.stop().await;
    }
    result
}

async fn run_against(
    args: &RunArgs,
    target: &str,
    overrides: bool,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<RunReport> {
    let channels = connect(target, args.load.connections).await?;
    probe(target, &channels[0], args.rpc).await?;
    let delay_ms = args
        .delay
        .map(|d| d.as_millis().min(u32::MAX as u128) as u32);
    let mode = args.mode.map(Mode::from);
    let fanout = args.fanout.map(Fanout::from);
    let fetch = FetchRequest {
        query: args.query.clone(),
        delay_ms,
        mode: mode.filter(|_| overrides).map(Into::into),
        fail: None,
    };
    let aggregate = AggregateRequest {
        query: args.query.clone(),
        backends: args.backends.clone(),
        fanout: fanout.filter(|_| overrides).map(Into::into),
        mode: mode.filter(|_| overrides).map(Into::into),
        delay_ms,
        no_cache: args.no_cache,
        ..Default::default()
    };
    let load = args.load.load(args.duration, args.warmup);
    let callers = callers(args.rpc, &channels, &fetch, &aggregate, load.timeout);
    probe_call(&callers[0]).await?;

    let rpc = format!("{:?}", args.rpc).to_lowercase();
    let outcome = measure(format!("{rpc} → {target}"), load, callers, stop).await;

    // The theory needs the latency: ours when we deployed, the delay override otherwise.
    let latency = match (overrides, args.delay) {
        (false, _) => Some(args.local.latency.clone()),
        (true, Some(d)) => Some(backend::latency::LatencySpec::Fixed(d)),
        (true, None) => None,
    };
    let theory = latency.map(|latency| {
        theory::bound(&Setup {
            concurrency: args.load.concurrency as usize,
            rate: args.load.rate,
            fanout: (args.rpc != Rpc::Fetch).then(|| fanout.unwrap_or(Fanout::Concurrent)),
            mode: mode.unwrap_or(Mode::Async),
            backends: if args.rpc == Rpc::Fetch {
                1
            } else if args.backends.is_empty() {
                args.local.local_backends as usize
            } else {
                args.backends.len()
            },
            latency,
            backend_workers: args.local.backend_workers as usize,
            aggregator_workers: args.local.aggregator_workers as usize,
            cores: cores(),
        })
    });
    Ok(run_report(args, target, &outcome, theory))
}

fn run_report(
    args: &RunArgs,
    target: &str,
    outcome: &Outcome,
    theory: Option<theory::Bound>,
) -> RunReport {
    let s = &outcome.stats;
    let calls_per_sec = report::rate(outcome);
    let secs = outcome.elapsed.as_secs_f64();
    RunReport {
        target: target.to_owned(),
        rpc: format!("{:?}", args.rpc).to_lowercase(),
        load: if args.load.rate.is_some() {
            "rate"
        } else {
            "closed"
        },
        concurrency: args.load.concurrency,
        rate: args.load.rate,
        connections: args.load.connections,
        duration_s: secs,
        warmup_s: args.warmup.as_secs_f64(),
        interrupted: outcome.interrupted,
        calls: s.calls(),
        errors: s.errors(),
        degraded: s.degraded,
        calls_per_sec,
        latency: s.percentiles(),
        status_counts: report::status_counts(s),
        stream: (args.rpc == Rpc::Stream).then(|| StreamReport {
            first_result: Percentiles::of(&s.first_result),
            results: s.stream_results,
            results_per_sec: if secs > 0.0 {
                s.stream_results as f64 / secs
            } else {
                0.0
            },
        }),
        efficiency: theory.as_ref().map(|t| calls_per_sec / t.calls_per_sec),
        theory,
    }
}

/// One line about a local deployment, for the user.
pub fn describe(spec: &DeploymentSpec) -> String {
    let backends = format!(
        "{} backend(s) (latency {}, --mode {}, {} workers)",
        spec.backends,
        spec.latency,
        spec.mode.cli_name(),
        spec.backend_workers
    );
    match spec.fanout {
        Some(f) => format!(
            "{backends} behind an aggregator (--fanout {}, {} workers) on 127.0.0.1",
            f.cli_name(),
            spec.aggregator_workers
        ),
        None => format!("{backends} on 127.0.0.1"),
    }
}
