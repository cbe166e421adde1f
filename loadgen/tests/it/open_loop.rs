//! The open loop keeps its promise: it offers the rate it was asked for whatever the target
//! does, drops (and counts) the calls the cap on calls outstanding does not allow rather than
//! delaying them, ends at its duration plus at most its drain, and accounts for every call due.
//! Real time, a real backend and the real binary: bounds are generous, ratios not absolutes.

use std::time::{Duration, Instant};

use crate::harness::{alone, json, loadgen, scratch, succeeded};
use serde_json::Value;

/// A backend taking `latency` per call, with overrides refused (the loadgen sends none here).
fn backend(latency: Duration) -> fanout_server::thread::ServerThread {
    let config = backend::Config {
        latency: backend::latency::LatencySpec::Fixed(latency),
        grace_period: Duration::from_millis(200),
        ..backend::Config::default()
    };
    backend::spawn(config, 2, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Runs `loadgen run --rpc fetch` against `url` with `args`; its report and how long it took.
fn run(name: &str, url: &str, args: &[&str]) -> (Value, String, Duration) {
    let dir = scratch(name);
    let out = dir.join("run.json");
    let started = Instant::now();
    let output = loadgen()
        .args(["run", "--rpc", "fetch", "--target", url, "--warmup", "0s"])
        .args(args)
        .arg("--json")
        .arg(&out)
        .output()
        .unwrap();
    let took = started.elapsed();
    let stdout = succeeded(&output);
    let report = json(&out);
    let _ = std::fs::remove_dir_all(dir);
    (report, stdout, took)
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

#[test]
fn a_rate_needing_more_calls_outstanding_than_the_default_callers_is_kept() {
    let _alone = alone();
    // 1,000 calls/s at 100 ms a call: about 100 outstanding. The default -c is 64, and the old
    // loadgen made that many callers and silently became a closed loop of them; an open loop
    // must not be capped by -c unless asked.
    let server = backend(Duration::from_millis(100));
    let (report, stdout, _) = run("keeps", &server.url(), &["--rate", "1000", "-d", "1s"]);
    let open = &report["open_loop"];
    assert_eq!(u(&open["due"]), 1000, "1 s at 1,000/s: {open}");
    assert_eq!(u(&open["dropped"]), 0, "{stdout}");
    assert_eq!(u(&open["sent"]), 1000);
    assert_eq!(u(&open["cut_off"]), 0);
    assert_eq!(u(&report["calls"]), 1000);
    let peak = u(&open["peak_outstanding"]);
    assert!(
        (80..=1000).contains(&peak),
        "peak outstanding {peak}, not capped at 64"
    );
    // Answers in the window per second of it: the offered rate, give or take the edges and a
    // debug build on a shared machine.
    let rate = report["calls_per_sec"].as_f64().unwrap();
    assert!(
        (750.0..=1100.0).contains(&rate),
        "{rate} calls/s for 1,000 offered"
    );
    // Latency counts from the due time: at least the backend's 100 ms.
    assert!(report["p50_ms"].as_f64().unwrap() >= 100.0, "{stdout}");
    assert!(
        stdout.contains("1,000 calls due: 1,000 sent, 0 dropped, 0 cut off"),
        "{stdout}"
    );
}

#[test]
fn a_target_slower_than_the_offer_gets_drops_reported_and_the_run_ends_on_time() {
    let _alone = alone();
    // 10 calls outstanding at most, 200 ms each: the target can take about 50/s of the 200/s
    // offered; the rest must be dropped, counted and said, not sent late.
    let server = backend(Duration::from_millis(200));
    let (report, stdout, took) = run(
        "drops",
        &server.url(),
        &[
            "--rate",
            "200",
            "--max-outstanding",
            "10",
            "-d",
            "2s",
            "--drain",
            "1s",
        ],
    );
    let open = &report["open_loop"];
    let (due, sent, dropped) = (u(&open["due"]), u(&open["sent"]), u(&open["dropped"]));
    assert_eq!(due, 400, "{open}");
    assert_eq!(
        sent + dropped,
        due,
        "every call due is sent or dropped: {open}"
    );
    assert!(
        (200..=340).contains(&dropped),
        "about 300 of 400 dropped: {open}"
    );
    assert!(u(&open["peak_outstanding"]) <= 10, "{open}");
    assert_eq!(u(&report["calls"]) + u(&open["cut_off"]), sent, "{report}");
    let rate = report["calls_per_sec"].as_f64().unwrap();
    assert!((25.0..=60.0).contains(&rate), "achieved {rate}/s");
    // The calls sent were not queued behind the cap: they took about the backend's time.
    let p50 = report["p50_ms"].as_f64().unwrap();
    assert!((200.0..400.0).contains(&p50), "p50 {p50} ms");
    assert!(stdout.contains("DROPPED"), "{stdout}");
    // Warm-up 0 + 2 s + at most 1 s of drain, plus start-up and connecting.
    assert!(took < Duration::from_secs(6), "took {took:?}");
}

#[test]
fn calls_outlasting_the_drain_are_cut_off_and_the_run_still_ends() {
    let _alone = alone();
    // Calls of 10 s, a 300 ms drain: every call is still outstanding when the drain runs out.
    let server = backend(Duration::from_secs(10));
    let (report, stdout, took) = run(
        "cut-off",
        &server.url(),
        &["--rate", "20", "-d", "1s", "--drain", "300ms"],
    );
    let open = &report["open_loop"];
    assert_eq!(u(&open["due"]), 20, "{open}");
    assert_eq!(u(&open["cut_off"]), 20, "{open}");
    assert_eq!(u(&report["calls"]), 0);
    assert!(stdout.contains("CUT OFF"), "{stdout}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}, not 1 s + 300 ms"
    );
}
