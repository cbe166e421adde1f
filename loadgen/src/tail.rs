//! `loadgen tail`: what fan-out does to a heavy tail, and what retries and hedging buy back.
//!
//! With n backends each slow with probability p, a call waits for a slow answer with
//! probability 1 - (1 - p)^n: fan-out multiplies the tail. A second attempt at a backend that
//! has not answered in time (a retry after a short attempt timeout, or a hedge sent beside the
//! first) is slow only if both are, p^2, so the call meets the tail with probability
//! 1 - (1 - p^2)^n. Each strategy runs on a fresh local deployment of heavy-tailed backends,
//! under the same open loop, one after another; the aggregator's Stats around the run say what
//! the strategy cost the backends.

use std::time::Duration;

use anyhow::bail;
use backend::latency::LatencySpec;
use fanout_proto::cli::fmt_duration;
use fanout_proto::v1::{AggregateRequest, Fanout, Mode, ServerStats};
use hdrhistogram::Histogram;
use tokio::sync::watch;

use crate::cli::{Strategy, TailArgs};
use crate::deploy::DeploymentSpec;
use crate::model::TailReport;
use crate::model::TailRow;
use crate::report::{ms, write_json};
use crate::scenario::{Lane, Stack};
use crate::stats::{self, Percentiles};

/// Long enough that no strategy but the ones measured cuts a slow answer short.
const PATIENT: Duration = Duration::from_secs(5);

/// Runs every strategy against every fan-out; prints the table, writes JSON and the chart.
pub async fn tail(args: TailArgs, stop: watch::Receiver<bool>) -> anyhow::Result<TailReport> {
    if args.backends.is_empty() || args.strategies.is_empty() || args.hedge_after.is_empty() {
        bail!("--backends, --strategies and --hedge-after each need at least one value");
    }
    let p = slow_probability(&args.latency);
    eprintln!(
        "tail: backends at {}, open loop at {} calls/s, {} per strategy after {} of warm-up, \
         each strategy on a fresh local deployment",
        args.latency,
        args.rate,
        fmt_duration(args.duration),
        fmt_duration(args.warmup)
    );
    println!("{HEADER}");
    let mut rows = Vec::new();
    let mut histograms = Vec::new();
    'all: for &n in &args.backends {
        // A row per strategy, and per delay for `hedge`.
        let cells = args.strategies.iter().flat_map(|&strategy| {
            let delays = match strategy {
                Strategy::Hedge => args.hedge_after.clone(),
                _ => vec![Duration::ZERO],
            };
            delays.into_iter().map(move |d| (strategy, d))
        });
        for (strategy, delay) in cells {
            if *stop.borrow() {
                break 'all;
            }
            let (policies, flags) = policies(&args, strategy, delay);
            let (row, latency) = measure(
                &args,
                n as usize,
                strategy,
                policies,
                flags,
                p,
                stop.clone(),
            )
            .await?;
            print_row(&row);
            rows.push(row);
            histograms.push(latency);
        }
    }
    let report = TailReport {
        latency: args.latency.to_string(),
        slow_probability: p,
        rate: args.rate,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        replicas: args.replicas as usize,
        encoding: stats::ENCODING.into(),
        interrupted: *stop.borrow(),
        rows,
    };
    write_json(&args.json, &report)?;
    crate::chart::write_tail_svg(&args.chart, &report, &histograms)?;
    println!(
        "\nwrote {} and {}",
        args.json.display(),
        args.chart.display()
    );
    Ok(report)
}

/// The chance that one backend call is slow, when the latency says.
pub fn slow_probability(latency: &LatencySpec) -> Option<f64> {
    match *latency {
        LatencySpec::Tail { p, .. } => Some(p),
        _ => None,
    }
}

/// The probability that a call to `n` backends, each slow with probability `p`, waits for a
/// slow answer, when each backend gets `chances` attempts (a retry or a hedge after a slow
/// one): only a backend whose attempts are all slow holds the call up.
pub fn tail_odds(p: f64, n: usize, chances: u32) -> f64 {
    let slow = p.powi(chances as i32);
    1.0 - (1.0 - slow).powi(n as i32)
}

/// Attempts one backend gets under `strategy` before it holds a call up.
fn chances(args: &TailArgs, strategy: Strategy) -> u32 {
    match strategy {
        Strategy::None => 1,
        Strategy::Retry => aggregator::RetryPolicy::default().max_attempts,
        Strategy::Hedge | Strategy::HedgeAdaptive => 1 + args.max_hedges,
    }
}

/// The aggregator's policies for `strategy` (`hedge`: after `delay`), and the flags a user
/// would give for them.
pub fn policies(
    args: &TailArgs,
    strategy: Strategy,
    delay: Duration,
) -> (aggregator::Config, String) {
    // No retries and limits far above the load (the strategies are what is measured), and
    // timeouts that let every slow answer arrive.
    let patient = aggregator::Config {
        attempt_timeout: PATIENT,
        deadline: PATIENT,
        ..DeploymentSpec::measuring()
    };
    match strategy {
        Strategy::None => (patient, "--max-attempts 1".into()),
        Strategy::Retry => (
            aggregator::Config {
                attempt_timeout: args.retry_timeout,
                retry: aggregator::RetryPolicy::default(),
                ..patient
            },
            format!(
                "--attempt-timeout {}",
                humantime::format_duration(args.retry_timeout)
            ),
        ),
        Strategy::Hedge => (
            aggregator::Config {
                hedge: aggregator::HedgePolicy {
                    after: Some(aggregator::HedgeAfter::Fixed(delay)),
                    max_hedges: args.max_hedges,
                    ..Default::default()
                },
                ..patient
            },
            format!(
                "--hedge-after {}{}",
                humantime::format_duration(delay),
                max_hedges(args)
            ),
        ),
        Strategy::HedgeAdaptive => (
            aggregator::Config {
                hedge: aggregator::HedgePolicy {
                    after: Some(args.hedge_percentile),
                    max_hedges: args.max_hedges,
                    ..Default::default()
                },
                ..patient
            },
            format!(
                "--hedge-after {}{}",
                args.hedge_percentile,
                max_hedges(args)
            ),
        ),
    }
}

/// ` --max-hedges N` when it is not the default.
fn max_hedges(args: &TailArgs) -> String {
    match args.max_hedges {
        1 => String::new(),
        n => format!(" --max-hedges {n}"),
    }
}

async fn measure(
    args: &TailArgs,
    n: usize,
    strategy: Strategy,
    policies: aggregator::Config,
    flags: String,
    p: Option<f64>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<(TailRow, Histogram<u64>)> {
    let spec = DeploymentSpec {
        backends: n,
        replicas: args.replicas as usize,
        latency: args.latency.clone(),
        mode: Mode::Async,
        backend_workers: args.backend_workers as usize,
        capacity: None,
        fanout: Some(Fanout::Concurrent),
        aggregator_workers: args.aggregator_workers as usize,
        policies: Some(policies),
        fail_rate: 0.0,
        faults: Vec::new(),
    };
    let stack = Stack::start(&spec).await?;
    let request = AggregateRequest {
        query: "tail".into(),
        no_cache: true,
        ..Default::default()
    };
    let measured = async {
        let before = stack.server_stats().await?;
        let outcome = stack
            .open_loop(
                Lane::A,
                format!("{n} backends / {}", strategy.name()),
                &request,
                args.rate,
                args.warmup,
                args.duration,
                stop,
            )
            .await?;
        let after = stack.server_stats().await?;
        anyhow::Ok((outcome, before, after))
    }
    .await;
    stack.stop().await;
    let (outcome, before, after) = measured?;
    let s = &outcome.stats;
    let row = TailRow {
        backends: n,
        strategy: strategy.name().into(),
        flags,
        calls: s.calls(),
        errors: s.errors(),
        degraded: s.degraded,
        calls_per_sec: outcome.calls_per_sec(),
        latency: Percentiles::of(&s.latency),
        extra_backend_calls: extra_calls(&before, &after, n),
        retries: after.retries - before.retries,
        hedges: after.hedges - before.hedges,
        hedges_won: after.hedges_won - before.hedges_won,
        hedges_refused: after.hedges_refused - before.hedges_refused,
        tail_odds: p.map(|p| tail_odds(p, n, chances(args, strategy))),
        histogram: stats::encode(&s.latency),
    };
    Ok((row, outcome.stats.latency))
}

/// Backend attempts beyond one per backend per aggregate call, as a share of those, between
/// two readings of the aggregator's Stats (warm-up and drain included: every call the
/// aggregator served in between, with every attempt it made for them).
pub fn extra_calls(before: &ServerStats, after: &ServerStats, backends: usize) -> f64 {
    let calls = after.served.saturating_sub(before.served);
    let attempts = after
        .backend_attempts
        .saturating_sub(before.backend_attempts);
    let needed = calls * backends as u64;
    if needed == 0 {
        return 0.0;
    }
    attempts as f64 / needed as f64 - 1.0
}

const HEADER: &str = "backends  strategy        flags                      calls    p50       p99       p99.9     max       extra calls  hedges (won/refused)  odds of the tail (theory)";

fn print_row(r: &TailRow) {
    let l = &r.latency;
    let odds = match r.tail_odds {
        None => "-".into(),
        Some(o) if o >= 0.001 => format!("{:.2}%", o * 100.0),
        Some(o) => format!("{:.4}%", o * 100.0),
    };
    let hedges = match r.strategy.as_str() {
        "hedge" | "hedge-adaptive" => {
            format!("{} ({}/{})", r.hedges, r.hedges_won, r.hedges_refused)
        }
        _ if r.retries > 0 => format!("{} retries", r.retries),
        _ => "-".into(),
    };
    let errors = if r.errors > 0 {
        format!("  {} errors", r.errors)
    } else {
        String::new()
    };
    println!(
        "{:<9} {:<15} {:<26} {:<8} {:<9} {:<9} {:<9} {:<9} {:<12} {:<21} {odds}{errors}",
        r.backends,
        r.strategy,
        r.flags,
        r.calls,
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.p999_ms),
        ms(l.max_ms),
        format!("{:+.1}%", r.extra_backend_calls * 100.0),
        hedges,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fan_out_multiplies_the_tail_and_a_second_chance_squares_it() {
        // The figures: 3 backends at 2%: 5.9%; 10 at 2%: 18%.
        assert!((tail_odds(0.02, 3, 1) - 0.0588).abs() < 1e-3);
        assert!((tail_odds(0.02, 10, 1) - 0.1829).abs() < 1e-3);
        assert!((tail_odds(0.02, 1, 2) - 0.0004).abs() < 1e-9);
        assert!((tail_odds(0.02, 10, 2) - 0.0040).abs() < 1e-4);
        assert!((tail_odds(0.02, 3, 3) - 0.000024).abs() < 1e-7);
    }

    #[test]
    fn extra_calls_count_attempts_beyond_one_per_backend() {
        let at = |served, backend_attempts| ServerStats {
            served,
            backend_attempts,
            ..Default::default()
        };
        assert!((extra_calls(&at(10, 30), &at(110, 336), 3) - 0.02).abs() < 1e-9);
        assert_eq!(extra_calls(&at(5, 5), &at(5, 5), 3), 0.0);
    }
}
