//! `overload`'s slowdown phase: the backends 2x slower under a steady load, the limit read
//! throughout, and when it settled.

use std::time::Duration;

use fanout_proto::v1::AggregateRequest;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;

use super::{Policy, binding_limit};
use crate::cli::OverloadArgs;
use crate::model::{LimitSample, Slowdown};
use crate::scenario::{Lane, Stack};
use crate::stats::Percentiles;

/// How often the slowdown phase reads the limits.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The slowdown phase: `--slowdown-for` at the backends' latency, then as long at twice it,
/// the two open loops back to back (the second starts as the first's schedule ends), the
/// limits read every [`SAMPLE_EVERY`] throughout.
pub(super) async fn slowdown(
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
