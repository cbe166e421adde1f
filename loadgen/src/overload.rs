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

use std::time::Duration;

use anyhow::bail;
use fanout_proto::cli::fmt_duration;
use fanout_proto::v1::{AggregateRequest, Fanout, Mode, ServerStats};
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use aggregator::client::limit::control::OPEN;

use crate::cli::OverloadArgs;
use crate::cli::scenario::LimitPolicy;
use crate::deploy::DeploymentSpec;
use crate::model::{LimitSample, OverloadReport, OverloadStep, Slowdown};
use crate::report::{ms, thousands, write_json};
use crate::scenario::{Lane, Stack};
use crate::stats::Percentiles;

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

/// How often the slowdown phase reads the limits.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

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

/// The slowdown phase: `--slowdown-for` at the backends' latency, then as long at twice it,
/// the two open loops back to back (the second starts as the first's schedule ends), the
/// limits read every [`SAMPLE_EVERY`] throughout.
async fn slowdown(
    args: &OverloadArgs,
    policy: Policy,
    capacity: f64,
    stack: &Stack,
    request: &AggregateRequest,
    stop: &watch::Receiver<bool>,
) -> anyhow::Result<Slowdown> {
    let rate = args.slowdown_at * capacity;
    let doubled = args.latency.mean() * 2;
    let slow = AggregateRequest {
        delay_ms: Some(doubled.as_millis().min(u128::from(u32::MAX)) as u32),
        ..request.clone()
    };
    let half = args.slowdown_for;
    let start = Instant::now();
    let (done_tx, done) = watch::channel(false);
    let sampling = sample_limits(stack, start, done);
    let first = stack.open_loop(
        Lane::A,
        format!("{} at {}x", policy.name(), args.slowdown_at),
        request,
        rate,
        Duration::ZERO,
        half,
        stop.clone(),
    );
    let second = async {
        tokio::time::sleep_until(start + half).await;
        stack
            .open_loop(
                Lane::B,
                format!(
                    "{} at {}x, backends 2x slower",
                    policy.name(),
                    args.slowdown_at
                ),
                &slow,
                rate,
                Duration::ZERO,
                half,
                stop.clone(),
            )
            .await
    };
    let load = async {
        let outcomes = tokio::join!(first, second);
        let _ = done_tx.send(true);
        outcomes
    };
    let ((first, second), samples) = tokio::join!(load, sampling);
    let (first, second) = (first?, second?);
    let slowed_at = half.as_secs_f64();
    let end = 2.0 * slowed_at;
    let limit_before = median_limit(&samples, slowed_at - 3.0, slowed_at);
    let limit_after = median_limit(&samples, end - 3.0, end);
    let goodput = |o: &crate::model::Outcome| {
        let ok = o.stats.status[Code::Ok as usize];
        (ok - o.stats.degraded.min(ok)) as f64 / o.elapsed.as_secs_f64().max(1e-9)
    };
    Ok(Slowdown {
        policy: policy.name().into(),
        offered_per_sec: rate,
        slowed_at_s: slowed_at,
        limit_before,
        limit_after,
        settled_after_s: match policy {
            // A fixed limit does not move: nothing to settle.
            Policy::Fixed { .. } => None,
            Policy::Adaptive => settled_after(&samples, slowed_at),
        },
        admitted_p99_before_ms: Percentiles::of(&first.stats.admitted).p99_ms,
        admitted_p99_after_ms: Percentiles::of(&second.stats.admitted).p99_ms,
        goodput_before_per_sec: goodput(&first),
        goodput_after_per_sec: goodput(&second),
        samples,
    })
}

/// The limits every [`SAMPLE_EVERY`] from `start` until `done`.
async fn sample_limits(
    stack: &Stack,
    start: Instant,
    mut done: watch::Receiver<bool>,
) -> Vec<LimitSample> {
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval_at(start, SAMPLE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.wait_for(|d| *d) => return samples,
        }
        if let Ok(stats) = stack.server_stats().await {
            samples.push(LimitSample {
                t_s: start.elapsed().as_secs_f64(),
                limit: binding_limit(&stats),
                in_flight: stats.backends.iter().map(|b| b.in_flight).sum(),
                queued: stats.backends.iter().map(|b| b.queued).sum(),
            });
        }
    }
}

/// The limit that binds: the smallest of the backends' (an adaptive one is its ceiling,
/// [`OPEN`], until its backend is overloaded; the door then refuses calls for the one at its
/// limit, so the others may never be).
fn binding_limit(stats: &ServerStats) -> f64 {
    stats
        .backends
        .iter()
        .map(|b| b.limit as f64)
        .fold(f64::INFINITY, f64::min)
}

/// A limit as the tables show it: `open` for an adaptive one that refuses nothing.
fn show_limit(limit: f64) -> String {
    if limit >= OPEN as f64 {
        "open".into()
    } else {
        format!("{limit:.0}")
    }
}

fn over_limit(stats: &ServerStats) -> u64 {
    stats.backends.iter().map(|b| b.over_limit).sum()
}

/// The median limit of the samples taken in `[from, to)`; 0 without any.
fn median_limit(samples: &[LimitSample], from: f64, to: f64) -> f64 {
    let mut limits: Vec<f64> = samples
        .iter()
        .filter(|s| s.t_s >= from && s.t_s < to)
        .map(|s| s.limit)
        .collect();
    if limits.is_empty() {
        return 0.0;
    }
    limits.sort_by(f64::total_cmp);
    limits[limits.len() / 2]
}

/// How long after `at` the limit settled: the first time its median over the last second
/// (of samples after `at`) came within the range it keeps at the end, and stayed there for
/// [`DWELL`]. Medians, because an adaptive limit saws up and down around its level all the
/// time; the range is that of those medians over the last 3 s, widened by 10% (at least 2
/// calls) each way. `None`: it never did, or the phase was too short to tell.
pub fn settled_after(samples: &[LimitSample], at: f64) -> Option<f64> {
    let rolling: Vec<(f64, f64)> = samples
        .iter()
        .filter(|s| s.t_s >= at)
        .map(|s| {
            let from = (s.t_s - 1.0 + 1e-9).max(at);
            (s.t_s, median_limit(samples, from, s.t_s + 1e-9))
        })
        .collect();
    let end = rolling.last()?.0;
    let steady = rolling
        .iter()
        .filter(|(t, _)| *t >= end - 3.0)
        .map(|(_, m)| *m);
    let (lo, hi) = steady.fold((f64::MAX, 0.0f64), |(lo, hi), m| (lo.min(m), hi.max(m)));
    let (lo, hi) = ((lo / 1.1).min(lo - 2.0), (hi * 1.1).max(hi + 2.0));
    rolling
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| t + DWELL <= end + 1e-9)
        .find(|(i, (t, _))| {
            rolling[*i..]
                .iter()
                .take_while(|(u, _)| *u <= t + DWELL + 1e-9)
                .all(|(_, m)| (lo..=hi).contains(m))
        })
        .map(|(_, (t, _))| t - at)
}

/// How long the limit must stay at its level to count as settled.
const DWELL: f64 = 2.0;

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

const STEP_HEADER: &str = "policy    offered     calls/s good   good/capacity  shed   degraded  failed  admitted p50  admitted p99  limit   rss";

fn print_step(s: &OverloadStep) {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    println!(
        "{:<9} {:<11} {:<14} {:<14} {:<6} {:<9} {:<7} {:<13} {:<13} {:<7} {}",
        s.policy,
        format!("{}x {}/s", s.multiple, thousands(s.offered_per_sec, 0)),
        thousands(s.goodput_per_sec, 1),
        pct(s.goodput_share),
        pct(s.shed_share),
        pct(s.degraded_share),
        pct(s.failed_share),
        ms(s.admitted_p50_ms),
        ms(s.admitted_p99_ms),
        show_limit(s.limit),
        s.rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB")),
    );
}

const SLOWDOWN_HEADER: &str = "slowdown  offered   limit before -> after  settled after  admitted p99 before -> after  good calls/s before -> after";

fn print_slowdown(s: &Slowdown) {
    println!(
        "{:<9} {:<9} {:<22} {:<14} {:<29} {} -> {}",
        s.policy,
        format!("{}/s", thousands(s.offered_per_sec, 0)),
        format!(
            "{} -> {}",
            show_limit(s.limit_before),
            show_limit(s.limit_after)
        ),
        match (s.settled_after_s, s.policy.as_str()) {
            (Some(t), _) => format!("{t:.2}s"),
            (None, "fixed") => "-".into(),
            (None, _) => "not settled".into(),
        },
        format!(
            "{} -> {}",
            ms(s.admitted_p99_before_ms),
            ms(s.admitted_p99_after_ms)
        ),
        thousands(s.goodput_before_per_sec, 1),
        thousands(s.goodput_after_per_sec, 1),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(limits: &[f64]) -> Vec<LimitSample> {
        limits
            .iter()
            .enumerate()
            .map(|(i, &limit)| LimitSample {
                t_s: i as f64,
                limit,
                in_flight: 0,
                queued: 0,
            })
            .collect()
    }

    #[test]
    fn settling_is_the_last_time_the_limit_entered_the_band() {
        // Slowed at 2 s: dips, comes back at 6 s and stays.
        let s = samples(&[
            20.0, 20.0, 14.0, 9.0, 6.0, 12.0, 19.0, 21.0, 20.0, 20.0, 19.0, 21.0, 20.0,
        ]);
        assert_eq!(settled_after(&s, 2.0), Some(4.0));
        // Never left its level.
        let s = samples(&[20.0, 20.0, 19.0, 21.0, 20.0, 20.0]);
        assert_eq!(settled_after(&s, 1.0), Some(0.0));
        // Back for a moment, then away again, then back for good.
        let s = samples(&[20.0, 20.0, 5.0, 19.0, 5.0, 20.0, 21.0, 20.0, 20.0, 20.0]);
        assert_eq!(settled_after(&s, 1.0), Some(4.0));
        // Too short a phase after the change to tell.
        let s = samples(&[20.0, 20.0, 5.0]);
        assert_eq!(settled_after(&s, 1.0), None);
    }

    #[test]
    fn the_median_limit_of_a_window() {
        let s = samples(&[1.0, 9.0, 3.0, 7.0, 5.0]);
        assert_eq!(median_limit(&s, 1.0, 4.0), 7.0);
        assert_eq!(median_limit(&s, 10.0, 11.0), 0.0);
    }
}
