//! How long `compare` measures each configuration, and which it may measure side by side.

use std::time::Duration;

use fanout_proto::v1::Fanout;

use crate::model::{Load, Shape};
use crate::theory::{self, Limit};

/// Whether a configuration's bound is threads that sleep (workers blocked in `thread::sleep`
/// or in a blocking receive): such a configuration uses next to no CPU, so several can be
/// measured at once on one machine without changing each other's figures.
pub fn shares_the_machine(bound: &theory::Bound) -> bool {
    matches!(
        bound.limit,
        Limit::BackendWorkers | Limit::AggregatorWorkers
    )
}

/// Stretches a closed loop's warm-up and window for slow configurations. With C callers and a
/// bound of X calls/s, one call takes about C/X once queues have formed (Little's law). The
/// warm-up must cover one such round for the queues to form, and the window several rounds:
/// completions in these configurations come in bursts of up to C calls, so over a window of one
/// round the count can be off by half.
///
/// Blocked-worker configurations (measured side by side, so time is cheap for them) get three
/// rounds of warm-up and ten of window. A blocked runtime also holds finished answers back at
/// times, so their rate wanders more. And a concurrent fan-out over blocked backends starts
/// with every call queued at all of them at once: after a single round of warm-up, the window
/// would still count calls mostly answered before it began, and read above the bound.
///
/// CPU-bound configurations are steady from the first call (the cores are saturated at once):
/// one round of warm-up and five of window, capped at 2 s and 8 s. Not behind a blocking
/// fan-out: its aggregator workers are as much the limit there (the two bounds are equal by
/// default) and its completions come in bursts, so it keeps the longer windows.
///
/// Capped, so a pathological configuration cannot stall the matrix. BENCHMARKS.md has the
/// runs behind these choices.
pub fn windows(mut load: Load, bound: &theory::Bound, fanout: Fanout) -> Load {
    let Shape::Closed { callers } = load.shape else {
        return load;
    };
    if load.requests.is_some() {
        return load;
    }
    let round = Duration::from_secs_f64(callers as f64 / bound.calls_per_sec.max(0.1));
    let (warmup, warmup_cap, rounds, cap) = match bound.limit {
        _ if shares_the_machine(bound) => (3, 10, 10, 20),
        Limit::Cores if fanout != Fanout::Blocking => (1, 2, 5, 8),
        _ => (1, 5, 5, 12),
    };
    let stretch = |rounds: u32, cap: u64| (round * rounds).min(Duration::from_secs(cap));
    load.warmup = load.warmup.max(stretch(warmup, warmup_cap));
    load.duration = load.duration.map(|d| d.max(stretch(rounds, cap)));
    load
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend::latency::LatencySpec;
    use fanout_proto::v1::Mode;

    use crate::theory::Setup;

    fn bound(calls_per_sec: f64, limit: Limit) -> theory::Bound {
        theory::Bound {
            calls_per_sec,
            limit,
            formula: String::new(),
            call_ms: 50.0,
        }
    }

    fn closed_loop() -> Load {
        Load {
            shape: Shape::Closed { callers: 64 },
            duration: Some(Duration::from_secs(3)),
            requests: None,
            warmup: Duration::from_secs(1),
            timeout: None,
        }
    }

    #[test]
    fn windows_stretch_by_rounds_and_stop_at_their_caps() {
        let secs = |l: &Load| (l.warmup.as_secs_f64(), l.duration.unwrap().as_secs_f64());
        // Fast: the asked-for windows stand.
        assert_eq!(
            secs(&windows(
                closed_loop(),
                &bound(1280.0, Limit::Callers),
                Fanout::Concurrent
            )),
            (1.0, 3.0)
        );
        // CPU-bound at 13.3/s, a round of 4.8 s: one round of warm-up, five measured, capped.
        let cpu = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::Cores),
            Fanout::Concurrent,
        );
        assert_eq!(secs(&cpu), (2.0, 8.0));
        // ...but not behind a blocking fan-out.
        let cpu_blocking = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::Cores),
            Fanout::Blocking,
        );
        assert_eq!(secs(&cpu_blocking).1, 12.0);
        // Anything else as slow: one round of warm-up and five measured, capped further.
        let pool = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::BlockingPool),
            Fanout::Concurrent,
        );
        assert!((secs(&pool).0 - 4.8).abs() < 1e-6, "{pool:?}");
        assert_eq!(secs(&pool).1, 12.0);
        // Blocked workers at 40/s, a round of 1.6 s: three rounds of warm-up, ten measured.
        let blocked = windows(
            closed_loop(),
            &bound(40.0, Limit::BackendWorkers),
            Fanout::Concurrent,
        );
        assert!((secs(&blocked).0 - 4.8).abs() < 1e-6, "{blocked:?}");
        assert!((secs(&blocked).1 - 16.0).abs() < 1e-6, "{blocked:?}");
        // ...and at 13.3/s both hit their caps.
        let slow = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::AggregatorWorkers),
            Fanout::Concurrent,
        );
        assert_eq!(secs(&slow), (10.0, 20.0));
        // An open loop, or a call count, is left as asked.
        let rated = Load {
            shape: Shape::Open {
                rate: 100.0,
                max_outstanding: 64,
                drain: Duration::from_secs(1),
            },
            ..closed_loop()
        };
        assert_eq!(
            secs(&windows(
                rated,
                &bound(40.0, Limit::BackendWorkers),
                Fanout::Concurrent
            )),
            (1.0, 3.0)
        );
    }

    #[test]
    fn only_blocked_worker_configurations_share_the_machine() {
        // As the theory names its limits for the default matrix.
        let of = |fanout, mode| {
            theory::bound(&Setup {
                concurrency: 64,
                rate: None,
                fanout: Some(fanout),
                mode,
                backends: 3,
                replicas: 1,
                latency: LatencySpec::Fixed(Duration::from_millis(50)),
                backend_workers: 2,
                aggregator_workers: 2,
                cores: 2,
            })
        };
        for fanout in [Fanout::Concurrent, Fanout::Sequential, Fanout::Blocking] {
            for mode in [Mode::Async, Mode::Blocking, Mode::SpawnBlocking, Mode::Cpu] {
                let b = of(fanout, mode);
                let sleeps =
                    mode == Mode::Blocking || (fanout == Fanout::Blocking && mode != Mode::Cpu);
                assert_eq!(shares_the_machine(&b), sleeps, "{fanout:?} {mode:?}: {b:?}");
            }
        }
    }
}
