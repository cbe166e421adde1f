//! The short form of `loadgen resilience`, as a user runs it: every scenario under the
//! defaults, the fault scenarios under `off` too (what the defaults are held against), and the
//! heavy tail under `defaults+hedge`; short windows on a smaller deployment (a debug build on a
//! shared machine). One test checks that the instrument measures what it says, whatever the
//! aggregator does; the other holds the defaults to the rules, at bounds looser than the
//! issue's (which the full run, `scripts/bench-resilience.sh`, measures).

use std::path::Path;
use std::sync::OnceLock;

use crate::harness::{alone, json, loadgen, scratch, succeeded};
use loadgen::resilience::cell::Cell;
use loadgen::resilience::rules::{self, Bounds};

/// The rows whose rule compares the defaults with the best configuration, heavy-tail aside
/// (measured under `defaults+hedge` instead).
const FAULTS: &str = "replica-slow,replica-killed,backend-silent,backend-refusing,\
                      latency-doubling,failures-20";

/// 3 backends at 20 ms working on 4 calls at once each (200 calls/s), short windows.
const SHORT: [&str; 8] = [
    "--latency",
    "20ms",
    "--capacity",
    "4",
    "-d",
    "1500ms",
    "--warmup",
    "500ms",
];
/// The overloaded rows warm up longer: before a fresh aggregator finds a backend overloaded a
/// line forms, which takes a couple of seconds to clear; the rules are about the overload once
/// the limit holds. 10x overload on backends at 100 ms working on 2 calls at once (20 calls/s,
/// 200/s offered): a debug build of the whole deployment offered thousands of calls a second
/// on this 2-core machine measures the machine, and at a cold start its stalls make the first
/// answers, which teach the limit the backends' no-load time, slower than the backends are.
const OVERLOAD: [&str; 8] = [
    "--latency",
    "100ms",
    "--capacity",
    "2",
    "-d",
    "3s",
    "--warmup",
    "2500ms",
];
const BLOCKING: [&str; 8] = [
    "--latency",
    "20ms",
    "--capacity",
    "4",
    "-d",
    "1500ms",
    "--warmup",
    "2500ms",
];

/// The cells of the short form, measured once for both tests (and the stdout of each run).
fn matrix() -> &'static (Vec<Cell>, String) {
    static MATRIX: OnceLock<(Vec<Cell>, String)> = OnceLock::new();
    MATRIX.get_or_init(|| {
        let _alone = alone();
        let dir = scratch("resilience");
        let runs = [
            (
                "all",
                "healthy-50,healthy-80,cold-start,heavy-tail,".to_owned() + FAULTS,
                "defaults",
                SHORT.as_slice(),
            ),
            ("overload", "overload-10x".into(), "defaults,off", &OVERLOAD),
            ("blocking", "blocking-2x".into(), "defaults,off", &BLOCKING),
            ("faults", FAULTS.to_owned(), "off", &SHORT),
            ("hedge", "heavy-tail".to_owned(), "defaults+hedge", &SHORT),
        ];
        let mut cells = Vec::new();
        let mut stdout = String::new();
        for (name, scenarios, configs, args) in runs {
            let (out, chart) = (
                dir.join(format!("{name}.json")),
                dir.join(format!("{name}.svg")),
            );
            let run = loadgen()
                .arg("resilience")
                .args(["--scenarios", &scenarios, "--configs", configs])
                .args(args)
                .arg("--json")
                .arg(&out)
                .arg("--chart")
                .arg(&chart)
                .output()
                .unwrap();
            stdout.push_str(&succeeded(&run));
            check_svg(&chart, &scenarios);
            let report = json(&out);
            let measured: Vec<Cell> = serde_json::from_value(report["cells"].clone()).unwrap();
            cells.extend(measured);
        }
        let _ = std::fs::remove_dir_all(dir);
        (cells, stdout)
    })
}

fn check_svg(chart: &Path, scenarios: &str) {
    let svg = std::fs::read_to_string(chart).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    for row in scenarios.split(',') {
        assert!(svg.contains(row), "{row} missing from the heatmap");
    }
}

fn find<'a>(cells: &'a [Cell], scenario: &str, config: &str) -> &'a Cell {
    cells
        .iter()
        .find(|c| c.scenario == scenario && c.config == config)
        .unwrap_or_else(|| panic!("no cell {scenario} / {config} in {cells:#?}"))
}

#[test]
fn the_matrix_measures_what_it_says() {
    let (cells, stdout) = matrix();
    assert_eq!(cells.len(), 10 + 4 + 6 + 1, "{cells:#?}");
    assert!(stdout.contains("scenario          defaults"), "{stdout}");
    assert!(stdout.contains("no-loss: "), "{stdout}");
    for c in cells {
        // Every call due is accounted for, and the counts add up.
        assert_eq!(c.calls, c.error_total() + c.degraded + c.good, "{c:?}");
        assert!(c.due() > 0 && c.window_s > 1.0, "{c:?}");
        assert!(c.goodput_per_s <= c.offered_per_s * 1.001, "{c:?}");
        if c.good > 0 {
            assert!(c.p50_ms <= c.p99_ms && c.p99_ms <= c.p999_ms, "{c:?}");
        }
    }
    let f = |s, c| find(cells, s, c);
    // The offered loads: half the capacity, ten times it; the cold start's burst on top.
    assert!((f("healthy-50", "defaults").offered_per_s - 100.0).abs() < 1.0);
    assert!((f("overload-10x", "defaults").offered_per_s - 200.0).abs() < 2.0);
    assert!(f("cold-start", "defaults").offered_per_s > 160.0);
    // A silent backend is known silent during the warm-up (its first calls waited their
    // attempt timeout), and its part fails at once from then on, whatever the configuration.
    // Its part is excused, so those calls are still good.
    let silent = f("backend-silent", "off");
    assert!(silent.p50_ms < 200.0, "{silent:?}");
    assert_eq!(silent.good, silent.calls, "{silent:?}");
    assert_eq!(silent.broken_backend.as_deref(), Some("b3"));
    // A refused connection fails at once.
    let refusing = f("backend-refusing", "off");
    assert!(refusing.p50_ms < 200.0, "{refusing:?}");
    assert_eq!(refusing.good, refusing.calls, "{refusing:?}");
    // One attempt at three backends failing 20% each: about half the calls miss a part.
    let failing = f("failures-20", "off");
    let degraded = failing.share(failing.degraded);
    assert!((0.3..0.65).contains(&degraded), "{failing:?}");
    // The tail is there, and the doubled latency shows in the second half.
    assert!(f("heavy-tail", "defaults").p99_ms >= 300.0);
    assert!(f("latency-doubling", "off").p99_ms >= 35.0);
    // Retries and hedges show as extra backend calls; none without them.
    assert_eq!(failing.extra_backend_calls, 0.0);
    assert!(f("failures-20", "defaults").extra_backend_calls > 0.05);
    assert!(f("heavy-tail", "defaults+hedge").extra_backend_calls > 0.0);
}

#[test]
fn the_defaults_keep_the_rules() {
    let (cells, _) = matrix();
    // Looser than the issue's: a short debug run on a shared machine. A call lost in a
    // hundred (one in two hundred on a cold start or across a slowdown) is still a failure.
    let bounds = Bounds {
        loss: 0.01,
        loss_cold: 0.005,
        broken_p50: 3.0,
        near_best: 0.9,
        overload_goodput: 0.75,
        overload_p99: 5.0,
        hedge_cut: 5.0,
        hedge_extra: 0.08,
    };
    let verdicts = rules::check(cells, &bounds);
    let failed: Vec<String> = verdicts
        .iter()
        .filter(|v| v.outcome() != "PASS")
        .map(|v| format!("{} {}: {}", v.outcome(), v.rule, v.violations.join("; ")))
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
