//! What the throughput *should* be: the bound each configuration is held against.
//!
//! Little's law: a system holding N calls in progress, each taking R, completes N/R calls per
//! second. What differs between the configurations is what limits N and what R is:
//!
//! | limit | bound | when |
//! |---|---|---|
//! | callers | C / R | waits overlap: async or spawn-blocking backends, concurrent fan-out |
//! | backend workers | W_b / L | `--mode blocking`: a waiting call holds one of W_b workers |
//! | aggregator workers | W_a / (n·L) | `--fanout blocking`: a call holds an aggregator worker for all n backends |
//! | cores | K / (n·L) | `--mode cpu`: every call burns n·L of CPU, the machine has K cores |
//! | blocking pool | 512 / L | `spawn-blocking`: tokio's blocking pool has 512 threads |
//! | rate | R_target | open loop: never more than asked for |
//!
//! With R replicas per backend, every worker bound on the backends is R times larger.
//!
//! The first and the last of these are the load's own (they add up over several loadgens
//! driving one target); the others are the target's (shared by all of them), which is how
//! `loadgen merge` combines the bounds of several runs.
//!
//! R, the time one aggregate call takes when nothing queues: the expected *maximum* of n
//! latencies for concurrent fan-out (the slowest backend), their sum for sequential or blocking
//! fan-out. For a distribution it is estimated by drawing from it (seeded, so repeatable).

use std::time::Duration;

use backend::latency::LatencySpec;
use fanout_proto::v1::{Fanout, Mode};

pub use loadgen_engine::bound::{Bound, Limit, cores};

/// tokio's default cap on blocking-pool threads.
const BLOCKING_POOL: f64 = 512.0;

/// The configuration a bound is computed for.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Callers (closed loop) or the most outstanding calls (open loop).
    pub concurrency: usize,
    pub rate: Option<f64>,
    /// `None` when the load calls a backend directly (`--rpc fetch`).
    pub fanout: Option<Fanout>,
    pub mode: Mode,
    /// Backends per aggregate call.
    pub backends: usize,
    /// Endpoints (replicas) of each backend.
    pub replicas: usize,
    pub latency: LatencySpec,
    pub backend_workers: usize,
    pub aggregator_workers: usize,
    pub cores: usize,
}

/// The expected maximum of `n` draws from `spec`, estimated by sampling (seeded).
pub fn expected_max(spec: &LatencySpec, n: usize) -> Duration {
    if let LatencySpec::Fixed(d) = spec {
        return *d;
    }
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let rounds = 20_000;
    let total: f64 = (0..rounds)
        .map(|_| {
            (0..n.max(1))
                .map(|_| spec.sample(&mut rng))
                .max()
                .unwrap_or_default()
                .as_secs_f64()
        })
        .sum();
    Duration::from_secs_f64(total / rounds as f64)
}

/// The tightest bound for `s`.
pub fn bound(s: &Setup) -> Bound {
    bounds(s)
        .into_iter()
        .min_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec))
        .expect("at least the callers' bound")
}

/// Every bound that applies to `s`, the callers' first.
pub fn bounds(s: &Setup) -> Vec<Bound> {
    let mean = s.latency.mean().as_secs_f64().max(1e-6);
    let n = s.backends.max(1) as f64;
    let fanout = s.fanout.unwrap_or(Fanout::Concurrent);
    // One aggregate call's time with no queueing, and how many backend latencies it spends
    // sitting on one thing.
    let (call, serial) = match (s.fanout, fanout) {
        (None, _) => (mean, 1.0),
        (Some(_), Fanout::Sequential | Fanout::Blocking) => (n * mean, n),
        _ => (
            expected_max(&s.latency, s.backends).as_secs_f64().max(1e-6),
            1.0,
        ),
    };
    let per_call_backends = if s.fanout.is_some() { n } else { 1.0 };
    let c = s.concurrency as f64;
    let mut bounds = vec![(c / call, Limit::Callers, format!("C/R = {c}/{call:.3}s"))];
    if let Some(rate) = s.rate {
        bounds.push((rate, Limit::Rate, format!("{rate}/s asked for")));
    }
    // Replicas multiply the backends' workers.
    let r = s.replicas.max(1) as f64;
    let replicas = |f: String| {
        if s.replicas > 1 {
            format!("{} (×{} replicas)", f, s.replicas)
        } else {
            f
        }
    };
    match s.mode {
        Mode::Blocking => {
            let w = s.backend_workers as f64;
            bounds.push((
                r * w / mean,
                Limit::BackendWorkers,
                replicas(format!("W_b/L = {w}/{mean:.3}s")),
            ));
        }
        Mode::Cpu => {
            let k = s.cores as f64;
            let work = per_call_backends * mean;
            bounds.push((k / work, Limit::Cores, format!("K/(n·L) = {k}/{work:.3}s")));
        }
        Mode::SpawnBlocking => bounds.push((
            r * BLOCKING_POOL / mean,
            Limit::BlockingPool,
            replicas(format!("512/L = 512/{mean:.3}s")),
        )),
        Mode::Async | Mode::Unspecified => {}
    }
    if s.fanout == Some(Fanout::Blocking) {
        let w = s.aggregator_workers as f64;
        let hold = serial * mean;
        bounds.push((
            w / hold,
            Limit::AggregatorWorkers,
            format!("W_a/(n·L) = {w}/{hold:.3}s"),
        ));
    }
    bounds
        .into_iter()
        .map(|(calls_per_sec, limit, formula)| Bound {
            calls_per_sec,
            limit,
            formula,
            call_ms: call * 1e3,
        })
        .collect()
}

/// The bound on several loadgens driving one target together, from each one's [`bounds`]: the
/// load's own bounds add up (each run's tightest), the target's hold for all of them at once
/// (the tightest of any run). `None` when some run has no bounds (no theory for it).
pub fn combine(runs: &[Vec<Bound>]) -> Option<Bound> {
    if runs.is_empty() || runs.iter().any(Vec::is_empty) {
        return None;
    }
    let tightest = |bounds: &mut dyn Iterator<Item = &Bound>| {
        bounds
            .min_by(|a, b| a.calls_per_sec.total_cmp(&b.calls_per_sec))
            .cloned()
    };
    let loads: Vec<Bound> = runs
        .iter()
        .filter_map(|b| tightest(&mut b.iter().filter(|b| b.limit.is_the_load_s())))
        .collect();
    let mut candidates = Vec::new();
    if loads.len() == runs.len() {
        // Every run's load bound is of one kind when they ran alike; name the kind of the
        // first and show the sum.
        let total: f64 = loads.iter().map(|b| b.calls_per_sec).sum();
        let terms: Vec<String> = loads
            .iter()
            .map(|b| format!("{:.1}", b.calls_per_sec))
            .collect();
        candidates.push(Bound {
            calls_per_sec: total,
            limit: loads[0].limit,
            formula: format!(
                "the {} runs' own bounds added: {}",
                runs.len(),
                terms.join(" + ")
            ),
            call_ms: loads[0].call_ms,
        });
    }
    candidates.extend(tightest(
        &mut runs.iter().flatten().filter(|b| !b.limit.is_the_load_s()),
    ));
    tightest(&mut candidates.iter())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(fanout: Fanout, mode: Mode) -> Setup {
        Setup {
            concurrency: 64,
            rate: None,
            fanout: Some(fanout),
            mode,
            backends: 3,
            replicas: 1,
            latency: "50ms".parse().unwrap(),
            backend_workers: 2,
            aggregator_workers: 2,
            cores: 2,
        }
    }

    #[test]
    fn the_brief_s_numbers() {
        let b = bound(&setup(Fanout::Concurrent, Mode::Async));
        assert_eq!((b.calls_per_sec.round(), b.limit), (1280.0, Limit::Callers));
        let b = bound(&setup(Fanout::Sequential, Mode::Async));
        assert_eq!((b.calls_per_sec.round(), b.limit), (427.0, Limit::Callers));
        let b = bound(&setup(Fanout::Concurrent, Mode::Blocking));
        assert_eq!(
            (b.calls_per_sec.round(), b.limit),
            (40.0, Limit::BackendWorkers)
        );
        let b = bound(&setup(Fanout::Concurrent, Mode::Cpu));
        assert_eq!((b.calls_per_sec.round(), b.limit), (13.0, Limit::Cores));
        let b = bound(&setup(Fanout::Blocking, Mode::Async));
        assert_eq!(
            (b.calls_per_sec.round(), b.limit),
            (13.0, Limit::AggregatorWorkers)
        );
        let b = bound(&setup(Fanout::Concurrent, Mode::SpawnBlocking));
        assert_eq!(b.limit, Limit::Callers);
    }

    #[test]
    fn direct_backend_calls_and_rates() {
        let mut s = setup(Fanout::Concurrent, Mode::Blocking);
        s.fanout = None;
        assert_eq!(bound(&s).calls_per_sec.round(), 40.0);
        s.mode = Mode::Async;
        s.rate = Some(100.0);
        assert_eq!(bound(&s).limit, Limit::Rate);
    }

    #[test]
    fn the_slowest_of_several_draws_sets_concurrent_latency() {
        let spec: LatencySpec = "uniform:0ms..100ms".parse().unwrap();
        // E[max of 3 uniform(0, 100)] = 75 ms.
        let m = expected_max(&spec, 3).as_secs_f64() * 1e3;
        assert!((m - 75.0).abs() < 1.5, "{m}");
    }

    #[test]
    fn replicas_multiply_the_backends_workers() {
        let mut s = setup(Fanout::Concurrent, Mode::Blocking);
        s.replicas = 3;
        let b = bound(&s);
        assert_eq!(
            (b.calls_per_sec.round(), b.limit),
            (120.0, Limit::BackendWorkers)
        );
        assert!(b.formula.contains("3 replicas"), "{}", b.formula);
    }

    #[test]
    fn runs_together_add_their_own_bounds_not_the_target_s() {
        // Two runs of 64 callers at 50 ms against async backends: 1280/s each, 2560/s together.
        let fast = bounds(&setup(Fanout::Concurrent, Mode::Async));
        let both = combine(&[fast.clone(), fast.clone()]).unwrap();
        assert_eq!(
            (both.calls_per_sec.round(), both.limit),
            (2560.0, Limit::Callers)
        );
        // Against blocking backends the backends' 40/s is shared: still 40/s together.
        let blocked = bounds(&setup(Fanout::Concurrent, Mode::Blocking));
        let both = combine(&[blocked.clone(), blocked]).unwrap();
        assert_eq!(
            (both.calls_per_sec.round(), both.limit),
            (40.0, Limit::BackendWorkers)
        );
        // Open loops: the rates add up.
        let mut s = setup(Fanout::Concurrent, Mode::Async);
        s.rate = Some(100.0);
        let both = combine(&[bounds(&s), bounds(&s)]).unwrap();
        assert_eq!((both.calls_per_sec, both.limit), (200.0, Limit::Rate));
        assert!(combine(&[fast, vec![]]).is_none());
    }
}
