//! `loadgen run`: one scenario. Checks the flags against each other, starts a local deployment
//! (or takes the given target), checks the target, waits for `--start-at`, drives the load
//! while reading the aggregator's per-endpoint figures around the measured window, and turns
//! what was measured into a [`RunReport`] beside its theory.

use std::sync::Arc;
use std::time::SystemTime;

use anyhow::bail;
use backend::latency::LatencySpec;
use fanout_proto::cli::fmt_duration;
use fanout_proto::v1::{AggregateRequest, EndpointStats, Fanout, FetchRequest, Mode};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::caller::{self, Caller};
use crate::cli::RunArgs;
use crate::deploy::{Deployment, DeploymentSpec};
use crate::endpoints;
use crate::model::{Histograms, Load, Outcome, Progress, Rpc, RunReport, StreamReport};
use crate::monitor::Monitor;
use crate::report;
use crate::stats::{self, Percentiles};
use crate::target::{connect, normalize_url, probe, probe_caller};
use crate::theory::{self, Setup};
use crate::workers;

/// `loadgen run`: one scenario.
pub async fn run(args: RunArgs, stop: watch::Receiver<bool>) -> anyhow::Result<RunReport> {
    check(&args).map_err(anyhow::Error::msg)?;
    let load = args
        .load
        .load(args.duration, args.warmup)
        .map_err(anyhow::Error::msg)?;
    let local = &args.local;
    let mode: Option<Mode> = args.mode.map(Into::into);
    let fanout: Option<Fanout> = args.fanout.map(Into::into);

    // Either a deployment of our own, configured by the flags, or the given target, driven by
    // per-request overrides.
    let (deployment, target, overrides) = match &args.target {
        Some(t) => (None, normalize_url(t), true),
        None => {
            let spec = DeploymentSpec {
                backends: local.local_backends(),
                replicas: local.replicas(),
                latency: local.latency(),
                mode: mode.unwrap_or(Mode::Async),
                backend_workers: local.backend_workers as usize,
                fanout: (args.rpc != Rpc::Fetch).then(|| fanout.unwrap_or(Fanout::Concurrent)),
                aggregator_workers: local.aggregator_workers as usize,
                capacity: None,
                policies: None,
                fail_rate: 0.0,
                faults: Vec::new(),
            };
            eprintln!("starting a local deployment: {}", spec.describe());
            let d = Deployment::start(&spec).await?;
            let target = d.target();
            (Some(d), target, false)
        }
    };
    let result = run_against(&args, load, &target, overrides, stop).await;
    if let Some(d) = deployment {
        d.stop().await;
    }
    result
}

/// Flags that cannot work together, or not with this target, each refused with the reason.
fn check(args: &RunArgs) -> Result<(), String> {
    if args.rpc == Rpc::Fetch {
        if args.fanout.is_some() || !args.backends.is_empty() || args.no_cache {
            return Err(
                "--fanout, --backends and --no-cache apply to aggregator calls, not to --rpc fetch"
                    .into(),
            );
        }
        if args.local.replicas() > 1 {
            return Err(
                "--replicas needs an aggregator to balance over them: use --rpc aggregate or \
                 stream"
                    .into(),
            );
        }
    }
    match &args.target {
        Some(_) => args.local.check_for_target(),
        None if args.delay.is_some() => Err(
            "--delay is the override sent to a --target's backends; a local deployment's \
             backends wait --latency"
                .into(),
        ),
        None => Ok(()),
    }
}

async fn run_against(
    args: &RunArgs,
    load: Load,
    target: &str,
    overrides: bool,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<RunReport> {
    let conns = connect(target, args.load.connections, &args.tls).await?;
    probe(target, &conns[0], args.rpc).await?;
    // The backends' wait: --delay, or a fixed --latency, sent to a target as the override.
    let delay = match (&args.local.latency, args.delay) {
        (_, Some(d)) => Some(d),
        (Some(LatencySpec::Fixed(d)), None) if overrides => Some(*d),
        _ => None,
    };
    let delay_ms = delay.map(|d| d.as_millis().min(u32::MAX as u128) as u32);
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
    let callers = caller::callers(args.rpc, &conns, &fetch, &aggregate, load.timeout);
    probe_caller(&callers[0]).await?;

    // Behind an aggregator: its endpoints, over a connection apart from the load's.
    let stats_conn = match args.rpc {
        Rpc::Fetch => None,
        _ => Some(connect(target, 1, &args.tls).await?.remove(0)),
    };
    let known = match &stats_conn {
        Some(conn) => endpoints::read(conn).await,
        None => None,
    };

    if let Some(at) = args.start_at
        && !wait_until(at, stop.clone()).await?
    {
        bail!("interrupted while waiting for --start-at");
    }
    let start = Instant::now();
    let measure_from = start + load.warmup;
    let started_at = SystemTime::now() + load.warmup;
    // The endpoints' figures as the window opens, read beside the load.
    let before = stats_conn.clone().map(|conn| {
        tokio::spawn(async move {
            sleep_until(measure_from).await;
            endpoints::read(&conn).await
        })
    });
    let rpc = args.rpc.name();
    let outcome = measure(
        format!("{rpc} → {target}"),
        load.clone(),
        callers,
        stop,
        start,
    )
    .await;
    let endpoints = match (before, &stats_conn) {
        (Some(before), Some(conn)) if before.is_finished() => {
            match (before.await.ok().flatten(), endpoints::read(conn).await) {
                (Some(before), Some(after)) => endpoints::between(&before, &after),
                _ => Vec::new(),
            }
        }
        (Some(before), _) => {
            before.abort();
            Vec::new()
        }
        _ => Vec::new(),
    };

    let bounds = theory_bounds(args, &load, overrides, delay, known.as_deref());
    let mut report = run_report(args, &load, target, &outcome, bounds);
    report.started_at = Some(humantime::format_rfc3339_millis(started_at).to_string());
    report.endpoints = endpoints;
    Ok(report)
}

/// Waits until the wall-clock time `at`; false if stopped first. A time already passed is an
/// error: the loadgens meant to start together would not.
async fn wait_until(at: SystemTime, mut stop: watch::Receiver<bool>) -> anyhow::Result<bool> {
    let shown = humantime::format_rfc3339_seconds(at);
    let wait = match at.duration_since(SystemTime::now()) {
        Ok(wait) => wait,
        Err(late) => bail!(
            "--start-at {shown} passed {} ago, by the time the target was reached and checked: \
             give a later time",
            fmt_duration(late.duration())
        ),
    };
    eprintln!("starting at {shown}, in {}", fmt_duration(wait));
    Ok(tokio::select! {
        () = tokio::time::sleep(wait) => true,
        _ = stop.wait_for(|stop| *stop) => false,
    })
}

/// The bounds the measurement is held against, when the backends' latency is known: ours when
/// we deployed, the delay override otherwise. Against a target, the backends and their
/// replicas are read from its Stats.
fn theory_bounds(
    args: &RunArgs,
    load: &Load,
    overrides: bool,
    delay: Option<std::time::Duration>,
    known: Option<&[EndpointStats]>,
) -> Vec<theory::Bound> {
    let latency = match (overrides, delay) {
        (false, _) => args.local.latency(),
        (true, Some(d)) => LatencySpec::Fixed(d),
        (true, None) => return Vec::new(),
    };
    // Endpoints per backend name, at the target (or as we deployed them).
    let replicas_of = |name: &str| match known {
        Some(known) => known.iter().filter(|e| e.backend == name).count(),
        None => args.local.replicas(),
    };
    let names: Vec<String> = match (args.rpc, &args.backends, known) {
        (Rpc::Fetch, _, _) => Vec::new(),
        (_, chosen, _) if !chosen.is_empty() => chosen.clone(),
        (_, _, Some(known)) if !known.is_empty() => {
            let mut names: Vec<String> = known.iter().map(|e| e.backend.clone()).collect();
            names.dedup();
            names
        }
        _ => (1..=args.local.local_backends())
            .map(|i| format!("b{i}"))
            .collect(),
    };
    // A call goes to every backend named, so the one with the fewest replicas bounds it.
    let replicas = names
        .iter()
        .map(|n| replicas_of(n))
        .min()
        .unwrap_or(1)
        .max(1);
    theory::bounds(&Setup {
        concurrency: load.shape.concurrency(),
        rate: load.shape.rate(),
        fanout: (args.rpc != Rpc::Fetch)
            .then(|| args.fanout.map_or(Fanout::Concurrent, Fanout::from)),
        mode: args.mode.map_or(Mode::Async, Mode::from),
        backends: names.len().max(1),
        replicas,
        latency,
        backend_workers: args.local.backend_workers as usize,
        aggregator_workers: args.local.aggregator_workers as usize,
        cores: theory::cores(),
    })
}

fn run_report(
    args: &RunArgs,
    load: &Load,
    target: &str,
    outcome: &Outcome,
    bounds: Vec<theory::Bound>,
) -> RunReport {
    let s = &outcome.stats;
    let calls_per_sec = outcome.calls_per_sec();
    let secs = outcome.elapsed.as_secs_f64();
    let theory = bounds
        .iter()
        .min_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec))
        .cloned();
    let stream = args.rpc == Rpc::Stream;
    RunReport {
        target: target.to_owned(),
        rpc: args.rpc.name().to_owned(),
        load: match load.shape.rate() {
            Some(_) => "rate".into(),
            None => "closed".into(),
        },
        concurrency: load.shape.concurrency() as u32,
        rate: load.shape.rate(),
        connections: args.load.connections,
        started_at: None,
        duration_s: secs,
        warmup_s: args.warmup.as_secs_f64(),
        interrupted: outcome.interrupted,
        calls: s.calls(),
        errors: s.errors(),
        degraded: s.degraded,
        calls_per_sec,
        latency: s.percentiles(),
        status_counts: report::status_counts(s),
        open_loop: outcome.open.clone(),
        stream: stream.then(|| StreamReport {
            first_result: Percentiles::of(&s.first_result),
            results: s.stream_results,
            results_per_sec: crate::model::per_sec(s.stream_results, secs),
        }),
        endpoints: Vec::new(),
        efficiency: theory.as_ref().map(|t| calls_per_sec / t.calls_per_sec),
        theory,
        theory_bounds: bounds,
        histograms: Some(Histograms {
            encoding: stats::ENCODING.into(),
            latency: stats::encode(&s.latency),
            first_result: stream.then(|| stats::encode(&s.first_result)),
        }),
        merged_from: Vec::new(),
    }
}

/// Runs `load` over `callers` from `start` with a progress display labelled `label` (for
/// `compare` too).
pub async fn measure(
    label: String,
    load: Load,
    callers: Vec<Caller>,
    stop: watch::Receiver<bool>,
    start: Instant,
) -> Outcome {
    let progress = Arc::new(Progress::default());
    let monitor = Monitor::start(label, progress.clone(), load.shape.rate());
    let outcome = workers::drive(load, callers, progress, stop, start).await;
    monitor.finish();
    outcome
}
