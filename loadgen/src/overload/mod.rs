//! `loadgen overload`: what an aggregator does with more calls than its backends can take.
//!
//! The backends have a capacity (`--capacity` calls at once, the rest wait their turn), so
//! the deployment serves at most capacity / latency calls per second. The offered load steps
//! from below that to ten times it, on one deployment per policy: fixed limits (the
//! aggregator's old defaults) and adaptive ones (`auto`, today's defaults). Per step: goodput,
//! the share shed, the admitted calls' latency, and where the limit stands. Then the backends
//! slow down 2x (every call asks for twice the latency, through the `delay_ms` override) with
//! the limit read every 250 ms: an adaptive limit is cut while the backends queue, and given
//! back once fewer calls in flight show the backends slower rather than queueing. The limit
//! shown is the one that binds: the smallest backend's (`open` while none is overloaded).
//!
//! The parts: this file runs the steps, `slowdown` the slowdown phase (and judges when the
//! limit settled), `table` prints what they measured.

use anyhow::bail;
use fanout_proto::cli::fmt_duration;
use fanout_proto::v1::{AggregateRequest, Fanout, Mode, ServerStats};
use tokio::sync::watch;
use tonic::Code;

use crate::cli::OverloadArgs;
use crate::cli::scenario::LimitPolicy;
use crate::deploy::DeploymentSpec;
use crate::model::{OverloadReport, OverloadStep, Slowdown};
use crate::report::{thousands, write_json};
use crate::scenario::{Lane, Stack};
use crate::stats::Percentiles;

mod slowdown;
mod table;

pub use slowdown::settled_after;
use slowdown::slowdown;
use table::{SLOWDOWN_HEADER, STEP_HEADER, print_slowdown, print_step};

/// The policies measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Policy {
    Fixed { backend: u32, admission: u32 },
    Adaptive,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::Fixed { .. } => "fixed",
            Policy::Adaptive => "adaptive",
        }
    }

    /// The aggregator's defaults but for the limits.
    fn config(self) -> aggregator::Config {
        match self {
            Policy::Fixed { backend, admission } => aggregator::Config {
                backend_concurrency: aggregator::Limit::Fixed(backend as usize),
                max_in_flight: aggregator::Admission::Fixed(admission as usize),
                ..aggregator::Config::default()
            },
            Policy::Adaptive => aggregator::Config::default(),
        }
    }

    fn flags(self) -> String {
        match self {
            Policy::Fixed { backend, admission } => {
                format!("--backend-concurrency {backend} --max-in-flight {admission}")
            }
            Policy::Adaptive => "--backend-concurrency auto --max-in-flight auto".into(),
        }
    }
}

/// Runs both policies through the steps and the slowdown; prints the tables, writes JSON and
/// the chart.
pub async fn overload(
    args: OverloadArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<OverloadReport> {
    if args.steps.is_empty() || args.policies.is_empty() {
        bail!("--steps and --policies each need at least one value");
    }
    let latency = args.latency.mean();
    let capacity = f64::from(args.capacity) / latency.as_secs_f64();
    let policies: Vec<Policy> = args
        .policies
        .iter()
        .map(|p| match p {
            LimitPolicy::Fixed => Policy::Fixed {
                backend: args.fixed.0,
                admission: args.fixed.1,
            },
            LimitPolicy::Adaptive => Policy::Adaptive,
        })
        .collect();
    eprintln!(
        "overload: {} backends at {} with --capacity {}: the deployment serves {} calls/s; \
         steps {} of that, {} each after {} at its rate; {}, each policy on a fresh local \
         deployment",
        args.backends,
        args.latency,
        args.capacity,
        thousands(capacity, 0),
        args.steps
            .iter()
            .map(|m| format!("{m}x"))
            .collect::<Vec<_>>()
            .join(", "),
        fmt_duration(args.duration),
        fmt_duration(args.warmup),
        policies
            .iter()
            .map(|p| format!("{} ({})", p.name(), p.flags()))
            .collect::<Vec<_>>()
            .join(" beside "),
    );
    println!("{STEP_HEADER}");
    let mut steps = Vec::new();
    let mut slowdowns = Vec::new();
    for &policy in &policies {
        if *stop.borrow() {
            break;
        }
        let stack = Stack::start(&spec(&args, policy)).await?;
        let measured = run_policy(&args, policy, capacity, &stack, &stop).await;
        stack.stop().await;
        let (mut s, slowdown) = measured?;
        steps.append(&mut s);
        slowdowns.extend(slowdown);
    }
    if !slowdowns.is_empty() {
        println!("\n{SLOWDOWN_HEADER}");
        for s in &slowdowns {
            print_slowdown(s);
        }
    }
    let report = OverloadReport {
        latency: args.latency.to_string(),
        backends: args.backends as usize,
        backend_capacity: args.capacity,
        capacity_per_sec: capacity,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        interrupted: *stop.borrow(),
        steps,
        slowdowns,
    };
    write_json(&args.json, &report)?;
    crate::chart::write_overload_svg(&args.chart, &report)?;
    println!(
        "\nwrote {} and {}",
        args.json.display(),
        args.chart.display()
    );
    Ok(report)
}

fn spec(args: &OverloadArgs, policy: Policy) -> DeploymentSpec {
    DeploymentSpec {
        backends: args.backends as usize,
        replicas: 1,
        latency: args.latency.clone(),
        mode: Mode::Async,
        backend_workers: args.backend_workers as usize,
        capacity: Some(args.capacity as usize),
        fanout: Some(Fanout::Concurrent),
        aggregator_workers: args.aggregator_workers as usize,
        policies: Some(policy.config()),
        fail_rate: 0.0,
        faults: Vec::new(),
    }
}

async fn run_policy(
    args: &OverloadArgs,
    policy: Policy,
    capacity: f64,
    stack: &Stack,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<(Vec<OverloadStep>, Option<Slowdown>)> {
    let request = AggregateRequest {
        query: "overload".into(),
        no_cache: true,
        ..Default::default()
    };
    let mut steps = Vec::new();
    for &multiple in &args.steps {
        if *stop.borrow() {
            return Ok((steps, None));
        }
        let rate = multiple * capacity;
        let before = stack.server_stats().await?;
        let outcome = stack
            .open_loop(
                Lane::A,
                format!("{} at {multiple}x", policy.name()),
                &request,
                rate,
                args.warmup,
                args.duration,
                stop.clone(),
            )
            .await?;
        let after = stack.server_stats().await?;
        let s = &outcome.stats;
        let calls = s.calls();
        let share = |n: u64| {
            if calls > 0 {
                n as f64 / calls as f64
            } else {
                0.0
            }
        };
        let ok = s.status[Code::Ok as usize];
        let shed = s.status[Code::ResourceExhausted as usize];
        let secs = outcome.elapsed.as_secs_f64();
        let good = (ok - s.degraded.min(ok)) as f64 / secs.max(1e-9);
        let admitted = Percentiles::of(&s.admitted);
        let step = OverloadStep {
            policy: policy.name().into(),
            multiple,
            offered_per_sec: rate,
            calls,
            goodput_per_sec: good,
            goodput_share: good / capacity,
            shed_share: share(shed),
            degraded_share: share(s.degraded),
            failed_share: share(calls - ok - shed),
            admitted_p50_ms: admitted.p50_ms,
            admitted_p99_ms: admitted.p99_ms,
            limit: binding_limit(&after),
            backend_over_limit: over_limit(&after) - over_limit(&before),
            rss_mib: rss_mib(),
        };
        print_step(&step);
        steps.push(step);
    }
    if args.slowdown_at <= 0.0 || *stop.borrow() {
        return Ok((steps, None));
    }
    let slowdown = slowdown(args, policy, capacity, stack, &request, stop).await?;
    Ok((steps, Some(slowdown)))
}

/// The limit that binds: the smallest of the backends' (an adaptive one is its ceiling,
/// [`OPEN`](aggregator::client::limit::control::OPEN), until its backend is overloaded; the
/// door then refuses calls for the one at its limit, so the others may never be).
fn binding_limit(stats: &ServerStats) -> f64 {
    stats
        .backends
        .iter()
        .map(|b| b.limit as f64)
        .fold(f64::INFINITY, f64::min)
}

fn over_limit(stats: &ServerStats) -> u64 {
    stats.backends.iter().map(|b| b.over_limit).sum()
}

/// This process's resident memory, from /proc (Linux); `None` elsewhere.
fn rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}
