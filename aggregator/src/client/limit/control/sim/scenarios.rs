//! The simulated scenarios, by name, and the shapes of load and work they are made of.

use std::time::Duration;

use rand::Rng;
use rand::rngs::SmallRng;

use super::{Scenario, Work};

pub(super) fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub(super) fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A fixed answer time, with a little jitter as a real backend has.
pub(super) fn fixed(d: Duration) -> Work {
    Box::new(move |_, rng| Some(d + Duration::from_micros(rng.random_range(0..200))))
}

/// `before` until `at`, `after` from then on, with the same jitter.
pub(super) fn step(before: Duration, at: Duration, after: Duration) -> Work {
    Box::new(move |t, rng| {
        let d = if t < at { before } else { after };
        Some(d + Duration::from_micros(rng.random_range(0..200)))
    })
}

/// Lognormal answer times with the median and 99th percentile given.
pub(super) fn lognormal(p50: Duration, p99: Duration) -> Work {
    let mu = p50.as_secs_f64().ln();
    let sigma = (p99.as_secs_f64().ln() - mu) / 2.326;
    Box::new(move |_, rng| {
        // Box-Muller.
        let (u, v): (f64, f64) = (1.0 - rng.random::<f64>(), rng.random());
        let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        Some(Duration::from_secs_f64((mu + sigma * z).exp()))
    })
}

pub(super) fn steady(rate: f64) -> Box<dyn Fn(Duration) -> f64> {
    Box::new(move |_| rate)
}

pub(super) fn seeds() -> Vec<u64> {
    match std::env::var("SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SIM_SEED: a number")],
        Err(_) => vec![7, 11, 13],
    }
}

/// The scenarios, by name; each test below holds one to its band.
pub(super) fn scenario(name: &str) -> Scenario {
    let (servers, rate, work, length, settle): (usize, Box<dyn Fn(Duration) -> f64>, Work, _, _) =
        match name {
            // 20 at once at 20 ms: 1,000 calls/s; 800/s offered, arriving at random.
            "healthy at 80%" => (20, steady(800.0), fixed(ms(20)), secs(30), secs(0)),
            "heavy tail" => (
                usize::MAX,
                steady(300.0),
                Box::new(|_, rng: &mut SmallRng| {
                    Some(if rng.random_bool(0.02) {
                        ms(500)
                    } else {
                        ms(10)
                    })
                }),
                secs(30),
                secs(0),
            ),
            // A third of the calls go to a replica 10x slower (a balancer would send it fewer).
            "mixed replicas" => (
                usize::MAX,
                steady(500.0),
                Box::new(|_, rng: &mut SmallRng| {
                    Some(if rng.random_bool(1.0 / 3.0) {
                        ms(50)
                    } else {
                        ms(5)
                    })
                }),
                secs(30),
                secs(0),
            ),
            // 40% of its capacity; then every call takes twice as long: 80%.
            "slower at 40%" => (
                20,
                steady(400.0),
                step(ms(20), secs(10), ms(40)),
                secs(30),
                secs(0),
            ),
            "silent" => (20, steady(100.0), Box::new(|_, _| None), secs(20), secs(0)),
            // 20 at once at 100 ms: 200 calls/s; 2,000/s offered.
            // Counted from 8 s: the line that forms before a fresh limit finds the overload
            // (about 0.7 s of calls at 2,000/s, several seconds of the backend's work) is gone.
            "10x overload" => (20, steady(2000.0), fixed(ms(100)), secs(30), secs(8)),
            // Two at once at 20 ms (a blocking backend with 2 workers): 100/s; 200/s offered.
            "capacity 2 at 2x" => (2, steady(200.0), fixed(ms(20)), secs(30), secs(5)),
            // Twice its capacity; after 10 s every call takes twice as long (capacity halves).
            "2x, then slower" => (
                20,
                steady(400.0),
                step(ms(100), secs(10), ms(200)),
                secs(30),
                secs(15),
            ),
            // 10x for 10 s, then half the capacity.
            "10x, then 0.5x" => (
                20,
                Box::new(|t| if t < secs(10) { 2000.0 } else { 100.0 }),
                fixed(ms(100)),
                secs(30),
                secs(15),
            ),
            // 400 calls in the first 20 ms at a backend taking 100 at 50 ms (2,000/s), then 80%.
            "cold burst" => (
                100,
                Box::new(|t| if t < ms(20) { 20_000.0 } else { 1600.0 }),
                fixed(ms(50)),
                secs(20),
                secs(0),
            ),
            // 50% of its capacity; the backend stalls for 150 ms every 5 s (its thread
            // descheduled on a busy host): calls pile up, then all end at once.
            "stalls at 50%" => (
                20,
                steady(500.0),
                Box::new(|t: Duration, rng: &mut SmallRng| {
                    let into = t.as_secs_f64() % 5.0;
                    let stall = if (4.0..4.15).contains(&into) {
                        4.15 - into
                    } else {
                        0.0
                    };
                    Some(
                        ms(20)
                            + Duration::from_secs_f64(stall)
                            + Duration::from_micros(rng.random_range(0..200)),
                    )
                }),
                secs(30),
                secs(0),
            ),
            // Few answers an interval, each interval's median far from the last.
            "wide spread, 60/s" => (
                usize::MAX,
                steady(60.0),
                lognormal(ms(20), ms(200)),
                secs(60),
                secs(0),
            ),
            // 50 at once, lognormal around 20 ms: about 1,550 calls/s (the mean is 1.6x the
            // median); 10x offered.
            "wide spread, 10x" => (
                50,
                steady(16_000.0),
                lognormal(ms(20), ms(200)),
                secs(20),
                secs(5),
            ),
            other => panic!("no scenario {other}"),
        };
    Scenario {
        servers,
        rate,
        work,
        length,
        settle,
    }
}

/// The scenarios in which nothing is overloaded: nothing may be refused.
pub(super) const HEALTHY: [&str; 7] = [
    "healthy at 80%",
    "heavy tail",
    "mixed replicas",
    "slower at 40%",
    "silent",
    "cold burst",
    "wide spread, 60/s",
];
