//! The scenarios as a user runs them: `loadgen tail` and `loadgen overload` on local
//! deployments of their own, with short windows (a debug build on a shared machine: bounds are
//! loose, the figures that matter are in BENCHMARKS.md).

use crate::harness::{alone, json, loadgen, succeeded};

#[test]
fn tail_shows_a_hedge_cutting_the_tail_that_no_protection_waits_for() {
    let _alone = alone();
    let dir = std::env::temp_dir().join(format!("loadgen-tail-{}", std::process::id()));
    let (out, chart) = (dir.join("t.json"), dir.join("t.svg"));
    // One backend slow 4% of the time: 600 calls meet ~24 slow answers (the p99 without
    // protection is a slow one unless fewer than 7 came: odds of 1 in 100,000); a hedge after
    // 20 ms answers those in ~25 ms, and the hedge budget (5% of 200/s, plus 1/s) covers the
    // 8/s it needs.
    let run = loadgen()
        .args([
            "tail",
            "--latency",
            "tail:5ms,p=0.04,300ms",
            "--backends",
            "1",
        ])
        .args(["--strategies", "none,hedge", "--rate", "200", "-d", "3s"])
        .args(["--warmup", "500ms", "--json"])
        .arg(&out)
        .arg("--chart")
        .arg(&chart)
        .output()
        .unwrap();
    let stdout = succeeded(&run);
    assert!(stdout.contains("--hedge-after 20ms"), "{stdout}");
    let report = json(&out);
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{report}");
    let (none, hedge) = (&rows[0], &rows[1]);
    assert_eq!(none["strategy"], "none");
    assert_eq!(hedge["strategy"], "hedge");
    let p99 = |r: &serde_json::Value| r["p99_ms"].as_f64().unwrap();
    assert!(p99(none) >= 300.0, "none: {none}");
    assert!(
        p99(hedge) < p99(none) / 2.0,
        "hedge {hedge} against none {none}"
    );
    assert!(hedge["hedges"].as_u64().unwrap() > 0, "{hedge}");
    assert!(hedge["hedges_won"].as_u64().unwrap() > 0, "{hedge}");
    assert!(
        hedge["extra_backend_calls"].as_f64().unwrap() > 0.0,
        "{hedge}"
    );
    assert_eq!(none["extra_backend_calls"].as_f64(), Some(0.0), "{none}");
    assert!((none["tail_odds"].as_f64().unwrap() - 0.04).abs() < 1e-9);
    assert!((hedge["tail_odds"].as_f64().unwrap() - 0.0016).abs() < 1e-9);
    assert_eq!(none["errors"].as_u64(), Some(0));
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("hedge (--hedge-after 20ms)"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn overload_sheds_what_the_backends_cannot_take_and_keeps_the_rest_fast() {
    let _alone = alone();
    let dir = std::env::temp_dir().join(format!("loadgen-overload-{}", std::process::id()));
    let (out, chart) = (dir.join("o.json"), dir.join("o.svg"));
    // 3 backends of capacity 4 at 20 ms: 200 calls/s. Half of it, then four times it.
    let run = loadgen()
        .args(["overload", "--latency", "20ms", "--capacity", "4"])
        .args([
            "--steps",
            "0.5,4",
            "--policies",
            "adaptive",
            "--slowdown-at",
            "0",
        ])
        .args(["-d", "2s", "--warmup", "1s", "--json"])
        .arg(&out)
        .arg("--chart")
        .arg(&chart)
        .output()
        .unwrap();
    let stdout = succeeded(&run);
    assert!(stdout.contains("adaptive"), "{stdout}");
    let report = json(&out);
    assert_eq!(report["capacity_per_sec"].as_f64(), Some(200.0));
    let steps = report["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{report}");
    let (under, over) = (&steps[0], &steps[1]);
    let f = |r: &serde_json::Value, k: &str| r[k].as_f64().unwrap();
    assert_eq!(f(under, "shed_share"), 0.0, "{under}");
    assert!(f(under, "goodput_share") > 0.4, "{under}");
    // Four times the capacity: most calls shed at once, the admitted ones still answered in
    // about the backends' time, and the backends kept busy.
    assert!(f(over, "shed_share") > 0.5, "{over}");
    assert!(f(over, "goodput_share") > 0.5, "{over}");
    assert!(f(over, "admitted_p99_ms") < 200.0, "{over}");
    assert!(
        f(over, "limit") < 100.0,
        "the limit fell from its start: {over}"
    );
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("good calls/s"));
    let _ = std::fs::remove_dir_all(dir);
}
