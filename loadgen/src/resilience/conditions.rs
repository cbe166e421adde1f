//! The rows of the matrix: what each [`Condition`] puts the deployment through, as a [`Plan`]
//! (the servers, the offered load, and what happens when).
//!
//! Backends have a capacity (calls worked on at once; the rest wait their turn), so every row
//! knows what the deployment can serve, capacity / latency calls per second, and offers a
//! multiple of it. Three backends, `b1` to `b3`, unless the row needs replicas. Faults are
//! injected from outside the aggregator, as an operator would meet them: a relay frozen or
//! killed, an address where nothing listens, backends told to take longer or to fail.

use std::time::Duration;

use backend::latency::LatencySpec;
use fanout_proto::v1::{Fanout, Mode};

use crate::cli::{Condition, ResilienceArgs};
use crate::deploy::{DeploymentSpec, FaultKind, ReplicaFault};

/// Backends a call fans out to.
pub const BACKENDS: usize = 3;
/// Replicas per backend in the replica rows.
const REPLICAS: usize = 3;
/// Workers of the blocking backends: each serves WORKERS / latency calls per second, the
/// capacity of the blocking row.
const BLOCKING_WORKERS: usize = 2;
/// The backend that silent and refusing rows break, and its name.
const BROKEN: usize = 3;
const BROKEN_NAME: &str = "b3";

/// What happens during a cell, besides the load.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Event {
    /// Nothing: a steady state.
    Steady,
    /// No call before the window (not even the probe), no warm-up, and `burst` calls at its
    /// first instant besides the open loop.
    ColdStart { burst: u64 },
    /// The relay in front of `backend`'s replica `replica` freezes after one call has met
    /// every backend, before the warm-up: known silent by the window.
    Freeze { backend: usize, replica: usize },
    /// The relay in front of `backend`'s replica `replica` is killed halfway through the
    /// window.
    KillHalfway { backend: usize, replica: usize },
    /// The calls due in the second half of the window ask every backend to take this long
    /// (the `delay_ms` override).
    SlowHalfway(Duration),
}

/// One row, ready to measure under any configuration.
#[derive(Debug, Clone)]
pub struct Plan {
    pub condition: Condition,
    /// The deployment; the configuration under test fills in its policies.
    pub spec: DeploymentSpec,
    /// Aggregate calls per second offered (an open loop).
    pub rate: f64,
    /// Aggregate calls per second the deployment serves, before any fault; `None` when its
    /// backends have no limit (heavy-tail).
    pub capacity: Option<f64>,
    /// The backends' usual latency (the rules hold latencies against it).
    pub latency: Duration,
    pub warmup: Duration,
    pub duration: Duration,
    pub event: Event,
    /// The backend the row breaks on purpose, whose part failing is not degradation.
    pub broken: Option<&'static str>,
}

impl Plan {
    pub fn of(condition: Condition, args: &ResilienceArgs) -> Plan {
        let base = DeploymentSpec {
            backends: BACKENDS,
            replicas: 1,
            latency: args.latency.clone(),
            mode: Mode::Async,
            backend_workers: args.backend_workers as usize,
            capacity: Some(args.capacity as usize),
            fanout: Some(Fanout::Concurrent),
            aggregator_workers: args.aggregator_workers as usize,
            policies: None,
            fail_rate: 0.0,
            faults: Vec::new(),
        };
        let latency = args.latency.mean();
        let per_sec = |calls_at_once: usize, latency: Duration| {
            calls_at_once as f64 / latency.as_secs_f64().max(1e-9)
        };
        // Three replicas of a third of the capacity each (rounded up): about the same
        // deployment, and one replica lost costs a third of it.
        let replicated = |fault: FaultKind| {
            let each = (args.capacity as usize).div_ceil(REPLICAS);
            DeploymentSpec {
                replicas: REPLICAS,
                capacity: Some(each),
                faults: vec![ReplicaFault {
                    backend: 1,
                    replica: 0,
                    kind: fault,
                }],
                ..base.clone()
            }
        };
        let one_broken = |kind: FaultKind| DeploymentSpec {
            faults: vec![ReplicaFault {
                backend: BROKEN,
                replica: 0,
                kind,
            }],
            ..base.clone()
        };
        let capacity = per_sec(args.capacity as usize, latency);
        let (spec, multiple, event) = match condition {
            Condition::Healthy50 => (base, 0.5, Event::Steady),
            Condition::Healthy80 => (base, 0.8, Event::Steady),
            // Twice what a backend works on at once: the burst waits one latency in line at
            // the backends at most, well within any timeout, so a sound policy admits it all.
            Condition::ColdStart => (
                base,
                0.8,
                Event::ColdStart {
                    burst: 2 * u64::from(args.capacity),
                },
            ),
            Condition::HeavyTail => {
                let spec = DeploymentSpec {
                    latency: args.tail_latency.clone(),
                    capacity: None,
                    ..base
                };
                return Plan {
                    condition,
                    spec,
                    rate: args.tail_rate,
                    capacity: None,
                    latency: base_latency(&args.tail_latency),
                    warmup: args.warmup,
                    duration: args.duration,
                    event: Event::Steady,
                    broken: None,
                };
            }
            Condition::ReplicaSlow => {
                let slow = LatencySpec::Fixed(latency * 10);
                (replicated(FaultKind::Latency(slow)), 0.5, Event::Steady)
            }
            Condition::ReplicaKilled => (
                replicated(FaultKind::Relayed),
                0.5,
                Event::KillHalfway {
                    backend: 1,
                    replica: 0,
                },
            ),
            Condition::BackendSilent => (
                one_broken(FaultKind::Relayed),
                0.5,
                Event::Freeze {
                    backend: BROKEN,
                    replica: 0,
                },
            ),
            Condition::BackendRefusing => (one_broken(FaultKind::Refusing), 0.5, Event::Steady),
            // 40%: twice as slow, the backends serve half as much, and the load becomes 80% of
            // that: as busy as healthy-80, never overloaded.
            Condition::LatencyDoubling => (base, 0.4, Event::SlowHalfway(latency * 2)),
            Condition::Failures20 => (
                DeploymentSpec {
                    fail_rate: 0.2,
                    ..base
                },
                0.5,
                Event::Steady,
            ),
            Condition::Overload10x => (base, 10.0, Event::Steady),
            Condition::Blocking2x => (
                DeploymentSpec {
                    mode: Mode::Blocking,
                    backend_workers: BLOCKING_WORKERS,
                    capacity: None,
                    ..base
                },
                2.0,
                Event::Steady,
            ),
        };
        let capacity = match condition {
            Condition::Blocking2x => per_sec(BLOCKING_WORKERS, latency),
            Condition::ReplicaSlow | Condition::ReplicaKilled => {
                per_sec(spec.capacity.unwrap_or(0) * REPLICAS, latency)
            }
            _ => capacity,
        };
        let broken = matches!(
            condition,
            Condition::BackendSilent | Condition::BackendRefusing
        )
        .then_some(BROKEN_NAME);
        Plan {
            condition,
            spec,
            rate: multiple * capacity,
            capacity: Some(capacity),
            latency,
            warmup: match event {
                Event::ColdStart { .. } => Duration::ZERO,
                _ => args.warmup,
            },
            duration: args.duration,
            event,
            broken,
        }
    }

    /// One line about the row, for the user.
    pub fn describe(&self) -> String {
        let capacity = match self.capacity {
            Some(c) => format!(" ({:.0}% of the {c:.0}/s it serves)", 100.0 * self.rate / c),
            None => String::new(),
        };
        format!(
            "{}: {:.0} calls/s{capacity}; {}",
            name(self.condition),
            self.rate,
            self.spec.describe()
        )
    }
}

/// A row's name, as on the command line and in the JSON.
pub fn name(condition: Condition) -> &'static str {
    match condition {
        Condition::Healthy50 => "healthy-50",
        Condition::Healthy80 => "healthy-80",
        Condition::ColdStart => "cold-start",
        Condition::HeavyTail => "heavy-tail",
        Condition::ReplicaSlow => "replica-slow",
        Condition::ReplicaKilled => "replica-killed",
        Condition::BackendSilent => "backend-silent",
        Condition::BackendRefusing => "backend-refusing",
        Condition::LatencyDoubling => "latency-doubling",
        Condition::Failures20 => "failures-20",
        Condition::Overload10x => "overload-10x",
        Condition::Blocking2x => "blocking-2x",
    }
}

/// The row named `name`.
pub fn by_name(name: &str) -> Option<Condition> {
    use clap::ValueEnum;
    Condition::from_str(name, false).ok()
}

/// Whether the row offers more than the backends serve: what "nothing is overloaded" excludes.
pub fn overloaded(condition: Condition) -> bool {
    matches!(condition, Condition::Overload10x | Condition::Blocking2x)
}

/// Whether the row injects a fault (anything but healthy load and a cold start).
pub fn is_fault(condition: Condition) -> bool {
    !matches!(
        condition,
        Condition::Healthy50 | Condition::Healthy80 | Condition::ColdStart
    )
}

/// The usual latency of a spec: a heavy tail's base, not its mean (the slow calls are what a
/// hedge cuts off, not what "usual" means).
fn base_latency(spec: &LatencySpec) -> Duration {
    match *spec {
        LatencySpec::Tail { base, .. } => base,
        _ => spec.mean(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Parser, ValueEnum};

    fn args(flags: &[&str]) -> ResilienceArgs {
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            args: ResilienceArgs,
        }
        Cli::parse_from(std::iter::once("resilience").chain(flags.iter().copied())).args
    }

    #[test]
    fn names_are_the_command_line_s() {
        for c in Condition::value_variants() {
            assert_eq!(
                Some(name(*c)),
                c.to_possible_value()
                    .map(|v| v.get_name().to_owned())
                    .as_deref()
            );
            assert_eq!(by_name(name(*c)), Some(*c));
        }
    }

    #[test]
    fn loads_are_multiples_of_what_the_deployment_serves() {
        let a = args(&[]);
        let plan = |c| Plan::of(c, &a);
        // 10 calls at once at 20 ms: 500/s.
        assert_eq!(plan(Condition::Healthy50).capacity, Some(500.0));
        assert_eq!(plan(Condition::Healthy50).rate, 250.0);
        assert_eq!(plan(Condition::Overload10x).rate, 5000.0);
        // Replicas of 4 (10 / 3 rounded up): 12 a backend, 600/s.
        let killed = plan(Condition::ReplicaKilled);
        assert_eq!((killed.spec.replicas, killed.spec.capacity), (3, Some(4)));
        assert_eq!(killed.rate, 300.0);
        // Blocking: 2 workers at 20 ms, 100/s, offered twice that.
        let blocking = plan(Condition::Blocking2x);
        assert_eq!((blocking.capacity, blocking.rate), (Some(100.0), 200.0));
        let cold = plan(Condition::ColdStart);
        assert_eq!(cold.event, Event::ColdStart { burst: 20 });
        assert_eq!(cold.warmup, Duration::ZERO);
        let tail = plan(Condition::HeavyTail);
        assert_eq!((tail.capacity, tail.rate), (None, 200.0));
        assert_eq!(tail.latency, Duration::from_millis(10));
        assert_eq!(plan(Condition::BackendSilent).broken, Some("b3"));
        assert_eq!(plan(Condition::Failures20).broken, None);
    }
}
