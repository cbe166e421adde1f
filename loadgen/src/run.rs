//! `loadgen run`: one scenario. Starts a local deployment (or takes the given target), checks
//! the target, drives the load and turns what was measured into a [`RunReport`] beside its
//! theory.

use std::sync::Arc;

use anyhow::bail;
use fanout_proto::v1::{AggregateRequest, Fanout, FetchRequest, Mode};
use tokio::sync::watch;

use crate::cli::RunArgs;
use crate::deploy::{Deployment, DeploymentSpec};
use crate::model::{Load, Outcome, Progress, Rpc, RunReport, StreamReport};
use crate::monitor::Monitor;
use crate::report;
use crate::stats::Percentiles;
use crate::target::{connect, normalize_url, probe, probe_caller};
use crate::theory::{self, Setup};
use crate::workers::{self, Caller};

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
            eprintln!("starting a local deployment: {}", spec.describe());
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
    let conns = connect(target, args.load.connections, &args.tls).await?;
    probe(target, &conns[0], args.rpc).await?;
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
    let callers = workers::callers(args.rpc, &conns, &fetch, &aggregate, load.timeout);
    probe_caller(&callers[0]).await?;

    let rpc = args.rpc.name();
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
            cores: theory::cores(),
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
    let calls_per_sec = outcome.calls_per_sec();
    let secs = outcome.elapsed.as_secs_f64();
    RunReport {
        target: target.to_owned(),
        rpc: args.rpc.name().to_owned(),
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

/// Runs `load` over `callers` with a progress display labelled `label` (for `compare` too).
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
