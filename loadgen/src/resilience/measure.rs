//! One cell: a row's [`Plan`] under one configuration, on a fresh local deployment, with the
//! row's event played out during the load; then the [`Cell`] made of what was measured and of
//! the aggregator's counters around it.

use std::time::Duration;

use fanout_proto::v1::{AggregateRequest, ServerStats};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tonic::Code;

use super::cell::Cell;
use super::conditions::{self, Event, Plan};
use super::configurations;
use crate::cli::Configuration;
use crate::deploy::DeploymentSpec;
use crate::faults::Switch;
use crate::model::Outcome;
use crate::report::status_counts;
use crate::scenario::{Lane, Offer, Stack};
use crate::stats::{Percentiles, Stats};

/// How long a cold start's burst takes to fall due: all at once, as far as the backends can
/// tell.
const BURST_WITHIN: Duration = Duration::from_millis(1);

/// Measures `plan` under `configuration` on a deployment of its own, stopped afterwards.
pub async fn cell(
    plan: &Plan,
    configuration: Configuration,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Cell> {
    let spec = DeploymentSpec {
        policies: Some(configurations::policies(configuration)),
        ..plan.spec.clone()
    };
    let stack = Stack::start(&spec).await?;
    let label = format!(
        "{} / {}",
        conditions::name(plan.condition),
        configurations::name(configuration)
    );
    let measured = async {
        let before = stack.server_stats().await?;
        let window = play(&stack, plan, label, stop).await?;
        let after = stack.server_stats().await?;
        anyhow::Ok((window, before, after))
    }
    .await;
    stack.stop().await;
    let (window, before, after) = measured?;
    Ok(make_cell(plan, configuration, &window, &before, &after))
}

/// What the open loops of one cell measured, added up.
struct Window {
    stats: Stats,
    /// The measured window's length.
    elapsed: Duration,
    /// Calls due in it.
    due: u64,
    /// Of those, never answered.
    unanswered: u64,
}

impl Window {
    /// `outcomes` added up; the window is the sum of those in `timed` (open loops that ran
    /// one after another), not of those beside them (a burst).
    fn of(outcomes: &[Outcome], timed: &[usize]) -> Window {
        let mut stats = Stats::default();
        let (mut due, mut unanswered) = (0, 0);
        for o in outcomes {
            stats.merge(&o.stats);
            if let Some(open) = &o.open {
                due += open.due;
                unanswered += open.dropped + open.cut_off;
            }
        }
        let elapsed = timed.iter().map(|&i| outcomes[i].elapsed).sum();
        Window {
            stats,
            elapsed,
            due,
            unanswered,
        }
    }
}

/// Runs the load of `plan` on `stack`, with its event at its time.
async fn play(
    stack: &Stack,
    plan: &Plan,
    label: String,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Window> {
    let request = AggregateRequest {
        query: "resilience".into(),
        no_cache: true,
        ..Default::default()
    };
    let offer = |lane, label, request, rate, warmup, duration| Offer {
        lane,
        label,
        request,
        rate,
        warmup,
        duration,
        excused: plan.broken,
    };
    let steady = offer(
        Lane::A,
        label.clone(),
        &request,
        plan.rate,
        plan.warmup,
        plan.duration,
    );
    let relay = |backend, replica| {
        stack
            .deployment()
            .relay(backend, replica)
            .ok_or_else(|| anyhow::anyhow!("no relay in front of b{backend} replica {replica}"))
    };
    Ok(match plan.event {
        Event::Steady => {
            stack.probe(&request).await?;
            Window::of(&[stack.offer(steady, stop).await], &[0])
        }
        Event::ColdStart { burst } => {
            let rate = burst as f64 / BURST_WITHIN.as_secs_f64();
            let burst = offer(
                Lane::B,
                format!("{label}, burst"),
                &request,
                rate,
                Duration::ZERO,
                BURST_WITHIN,
            );
            let (steady, burst) =
                tokio::join!(stack.offer(steady, stop.clone()), stack.offer(burst, stop));
            Window::of(&[steady, burst], &[0])
        }
        Event::Freeze { backend, replica } => {
            // The first call meets every backend (connections open), then the silence.
            stack.probe(&request).await?;
            relay(backend, replica)?.set(Switch::Freeze);
            Window::of(&[stack.offer(steady, stop).await], &[0])
        }
        Event::KillHalfway { backend, replica } => {
            let relay = relay(backend, replica)?;
            stack.probe(&request).await?;
            let at = Instant::now() + plan.warmup + plan.duration / 2;
            let kill = async {
                sleep_until(at).await;
                relay.set(Switch::Kill);
            };
            let (steady, ()) = tokio::join!(stack.offer(steady, stop), kill);
            Window::of(&[steady], &[0])
        }
        Event::SlowHalfway(delay) => {
            stack.probe(&request).await?;
            let slow = AggregateRequest {
                delay_ms: Some(delay.as_millis().min(u128::from(u32::MAX)) as u32),
                ..request.clone()
            };
            let half = plan.duration / 2;
            let first = offer(
                Lane::A,
                label.clone(),
                &request,
                plan.rate,
                plan.warmup,
                half,
            );
            let second = offer(
                Lane::B,
                format!("{label}, 2x slower"),
                &slow,
                plan.rate,
                Duration::ZERO,
                plan.duration - half,
            );
            // Back to back: the second loop's schedule starts as the first one's window ends.
            let at = Instant::now() + plan.warmup + half;
            let second = async {
                sleep_until(at).await;
                stack.offer(second, stop.clone()).await
            };
            let (first, second) = tokio::join!(stack.offer(first, stop.clone()), second);
            Window::of(&[first, second], &[0, 1])
        }
    })
}

fn make_cell(
    plan: &Plan,
    configuration: Configuration,
    window: &Window,
    before: &ServerStats,
    after: &ServerStats,
) -> Cell {
    let s = &window.stats;
    let secs = window.elapsed.as_secs_f64().max(1e-9);
    let ok = s.status[Code::Ok as usize];
    let good = ok - s.degraded.min(ok);
    let mut errors = status_counts(s);
    errors.remove(fanout_proto::code_name(Code::Ok));
    let latency = Percentiles::of(&s.good);
    Cell {
        scenario: conditions::name(plan.condition).into(),
        config: configurations::name(configuration).into(),
        calls: s.calls(),
        errors,
        degraded: s.degraded,
        good,
        unanswered: window.unanswered,
        offered_per_s: window.due as f64 / secs,
        goodput_per_s: good as f64 / secs,
        capacity_per_s: plan.capacity,
        p50_ms: latency.p50_ms,
        p99_ms: latency.p99_ms,
        p999_ms: latency.p999_ms,
        admitted_p99_ms: Percentiles::of(&s.admitted).p99_ms,
        extra_backend_calls: extra_calls(before, after, plan.spec.backends),
        retries: after.retries.saturating_sub(before.retries),
        hedges: after.hedges.saturating_sub(before.hedges),
        hedges_refused: after.hedges_refused.saturating_sub(before.hedges_refused),
        latency_ms: plan.latency.as_secs_f64() * 1e3,
        broken_backend: plan.broken.map(str::to_owned),
        window_s: secs,
    }
}

/// Backend attempts beyond one per backend per admitted aggregate call, as a share of those,
/// between two readings of the aggregator's Stats (warm-up and drain included). Calls shed at
/// the door made no attempt and are left out: counting them would make shedding look like
/// saving backend calls.
pub fn extra_calls(before: &ServerStats, after: &ServerStats, backends: usize) -> f64 {
    let served = after.served.saturating_sub(before.served);
    let shed = after.shed.saturating_sub(before.shed);
    let needed = served.saturating_sub(shed) * backends as u64;
    let attempts = after
        .backend_attempts
        .saturating_sub(before.backend_attempts);
    if needed == 0 {
        return 0.0;
    }
    attempts as f64 / needed as f64 - 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_calls_leave_out_the_calls_shed() {
        let at = |served, shed, backend_attempts| ServerStats {
            served,
            shed,
            backend_attempts,
            ..Default::default()
        };
        // 100 admitted of 1,100, 3 backends, 330 attempts: 10% extra.
        let extra = extra_calls(&at(0, 0, 0), &at(1_100, 1_000, 330), 3);
        assert!((extra - 0.1).abs() < 1e-9, "{extra}");
        assert_eq!(extra_calls(&at(5, 5, 5), &at(5, 5, 5), 3), 0.0);
    }
}
