//! The maintained adaptive-concurrency crates in the same simulated scenarios as our limit:
//! tower-acc (Vegas, Gradient2) and tower-resilience-adaptive (Vegas), each with its shipped
//! defaults but for a ceiling as high as ours (theirs, 100 to 1,000, would refuse a healthy
//! burst before their algorithm had a say). Not a check: a report, for BENCHMARKS.md, run with
//! `cargo test -p aggregator --lib crates_in_our_scenarios -- --ignored --nocapture`.

use std::time::Instant;

use tower_resilience_adaptive::ConcurrencyAlgorithm as _;

use super::super::{Answer, Control, OPEN, Regime, Totals};
use super::{Algo, Outcome, run, scenario};

/// A tower-acc algorithm: fed every answer, its limit always enforced.
struct Acc<A>(A);

impl<A: tower_acc::Algorithm> Algo for Acc<A> {
    fn answer(&mut self, _: Instant, a: Answer, _: Totals) -> Option<String> {
        // A call given up on is what tower-acc calls canceled.
        self.0.update(a.took, a.in_flight, false, !a.answered);
        None
    }
    fn limit(&self) -> Option<usize> {
        Some(self.0.max_concurrency())
    }
    fn regime(&self) -> Regime {
        Regime::Overloaded
    }
}

/// tower-resilience-adaptive's Vegas.
struct Resilience(tower_resilience_adaptive::Vegas);

impl Algo for Resilience {
    fn answer(&mut self, _: Instant, a: Answer, _: Totals) -> Option<String> {
        if a.answered {
            self.0.record_success_with_load(a.took, a.in_flight);
        } else {
            self.0.record_dropped();
        }
        None
    }
    fn limit(&self) -> Option<usize> {
        Some(self.0.limit())
    }
    fn regime(&self) -> Regime {
        Regime::Overloaded
    }
}

type Make = Box<dyn Fn(Instant) -> Box<dyn Algo>>;

fn algorithms() -> Vec<(&'static str, Make)> {
    vec![
        ("ours", Box::new(|epoch| Box::new(Control::new(epoch)))),
        (
            "tower-acc Vegas",
            Box::new(|_| Box::new(Acc(tower_acc::Vegas::builder().max_limit(OPEN).build()))),
        ),
        (
            "tower-acc Gradient2",
            Box::new(|_| Box::new(Acc(tower_acc::Gradient2::builder().max_limit(OPEN).build()))),
        ),
        (
            "tower-resilience Vegas",
            Box::new(|_| {
                Box::new(Resilience(
                    tower_resilience_adaptive::Vegas::builder()
                        .max_limit(OPEN)
                        .build()
                        .expect("a valid Vegas"),
                ))
            }),
        ),
    ]
}

/// Each scenario's capacity in calls/s, where it has one (for goodput as a share of it).
fn capacity(name: &str) -> Option<f64> {
    match name {
        "10x overload" => Some(200.0),
        "capacity 2 at 2x" | "2x, then slower" => Some(100.0),
        "wide spread, 10x" => Some(50.0 / 0.0323),
        _ => None,
    }
}

fn cell(o: &Outcome, capacity: Option<f64>) -> String {
    let refused = 100.0 * o.refused as f64 / o.offered.max(1) as f64;
    let p99 = o.percentile(0.99).as_secs_f64() * 1e3;
    match capacity {
        Some(c) => format!("{:>5.1}% of cap, p99 {p99:>6.0}ms", 100.0 * o.goodput() / c),
        None => format!("{refused:>5.1}% refused, p99 {p99:>5.0}ms"),
    }
}

#[test]
#[ignore = "a report for BENCHMARKS.md, not a check: run with --ignored --nocapture"]
fn crates_in_our_scenarios() {
    let names = [
        "healthy at 80%",
        "heavy tail",
        "mixed replicas",
        "slower at 40%",
        "cold burst",
        "wide spread, 60/s",
        "10x overload",
        "capacity 2 at 2x",
        "2x, then slower",
        "10x, then 0.5x",
        "wide spread, 10x",
    ];
    let algos = algorithms();
    print!("{:<20}", "scenario (seed 7)");
    for (a, _) in &algos {
        print!(" | {a:<28}");
    }
    println!();
    for name in names {
        print!("{name:<20}");
        for (_, make) in &algos {
            let o = run(&scenario(name), 7, make.as_ref());
            print!(" | {:<28}", cell(&o, capacity(name)));
        }
        println!();
    }
}
