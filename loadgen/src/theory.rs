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
//! R, the time one aggregate call takes when nothing queues: the expected *maximum* of n
//! latencies for concurrent fan-out (the slowest backend), their sum for sequential or blocking
//! fan-out. For a distribution it is estimated by drawing from it (seeded, so repeatable).

use std::time::Duration;

use backend::latency::LatencySpec;
use fanout_proto::v1::{Fanout, Mode};
use serde::Serialize;

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
    pub latency: LatencySpec,
    pub backend_workers: usize,
    pub aggregator_workers: usize,
    pub cores: usize,
}

/// The bound on calls per second, and what sets it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bound {
    pub calls_per_sec: f64,
    /// What limits throughput: "callers", "backend workers", "aggregator workers", "cores",
    /// "blocking pool", "rate".
    pub limit: &'static str,
    /// The formula with numbers, e.g. "C/R = 64/0.050s".
    pub formula: String,
    /// R: one call's time when nothing queues, in milliseconds.
    pub call_ms: f64,
}

/// The machine's cores: K in the bound of CPU-bound configurations.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
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
    let mut bounds = vec![(c / call, "callers", format!("C/R = {c}/{call:.3}s"))];
    if let Some(rate) = s.rate {
        bounds.push((rate, "rate", format!("{rate}/s asked for")));
    }
    match s.mode {
        Mode::Blocking => {
            let w = s.backend_workers as f64;
            bounds.push((
                w / mean,
                "backend workers",
                format!("W_b/L = {w}/{mean:.3}s"),
            ));
        }
        Mode::Cpu => {
            let k = s.cores as f64;
            let work = per_call_backends * mean;
            bounds.push((k / work, "cores", format!("K/(n·L) = {k}/{work:.3}s")));
        }
        Mode::SpawnBlocking => bounds.push((
            BLOCKING_POOL / mean,
            "blocking pool",
            format!("512/L = 512/{mean:.3}s"),
        )),
        Mode::Async | Mode::Unspecified => {}
    }
    if s.fanout == Some(Fanout::Blocking) {
        let w = s.aggregator_workers as f64;
        let hold = serial * mean;
        bounds.push((
            w / hold,
            "aggregator workers",
            format!("W_a/(n·L) = {w}/{hold:.3}s"),
        ));
    }
    let (calls_per_sec, limit, formula) = bounds
        .into_iter()
        .min_by(|a, b| a.0.total_cmp(&b.0))
        .expect("at least the callers' bound");
    Bound {
        calls_per_sec,
        limit,
        formula,
        call_ms: call * 1e3,
    }
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
            latency: "50ms".parse().unwrap(),
            backend_workers: 2,
            aggregator_workers: 2,
            cores: 2,
        }
    }

    #[test]
    fn the_brief_s_numbers() {
        let b = bound(&setup(Fanout::Concurrent, Mode::Async));
        assert_eq!((b.calls_per_sec.round(), b.limit), (1280.0, "callers"));
        let b = bound(&setup(Fanout::Sequential, Mode::Async));
        assert_eq!((b.calls_per_sec.round(), b.limit), (427.0, "callers"));
        let b = bound(&setup(Fanout::Concurrent, Mode::Blocking));
        assert_eq!(
            (b.calls_per_sec.round(), b.limit),
            (40.0, "backend workers")
        );
        let b = bound(&setup(Fanout::Concurrent, Mode::Cpu));
        assert_eq!((b.calls_per_sec.round(), b.limit), (13.0, "cores"));
        let b = bound(&setup(Fanout::Blocking, Mode::Async));
        assert_eq!(
            (b.calls_per_sec.round(), b.limit),
            (13.0, "aggregator workers")
        );
        let b = bound(&setup(Fanout::Concurrent, Mode::SpawnBlocking));
        assert_eq!(b.limit, "callers");
    }

    #[test]
    fn direct_backend_calls_and_rates() {
        let mut s = setup(Fanout::Concurrent, Mode::Blocking);
        s.fanout = None;
        assert_eq!(bound(&s).calls_per_sec.round(), 40.0);
        s.mode = Mode::Async;
        s.rate = Some(100.0);
        assert_eq!(bound(&s).limit, "rate");
    }

    #[test]
    fn the_slowest_of_several_draws_sets_concurrent_latency() {
        let spec: LatencySpec = "uniform:0ms..100ms".parse().unwrap();
        // E[max of 3 uniform(0, 100)] = 75 ms.
        let m = expected_max(&spec, 3).as_secs_f64() * 1e3;
        assert!((m - 75.0).abs() < 1.5, "{m}");
    }
}
