//! Every flag does what `--help` says, or is refused: one test per family of flags, each
//! failing if a flag of the family is accepted and ignored. What the loadgen sends is read at a
//! recording fake server ([`crate::harness::Recorder`]); what it deploys, from its report.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Recorder, failed, json, loadgen, scratch, succeeded};
use fanout_proto::v1::{Fanout, Mode};
use serde_json::Value;

/// `loadgen run ARGS --json FILE`, which must succeed; its report.
fn report(name: &str, args: &[&str]) -> Value {
    let dir = scratch(name);
    let out = dir.join("run.json");
    succeeded(
        &loadgen()
            .arg("run")
            .args(args)
            .arg("--json")
            .arg(&out)
            .output()
            .unwrap(),
    );
    let report = json(&out);
    let _ = std::fs::remove_dir_all(dir);
    report
}

#[test]
fn what_each_call_sends() {
    // --query, --backends, --mode, --fanout, --latency (as delay_ms), --no-cache, --timeout.
    let rec = Recorder::start(Duration::ZERO);
    let common = ["--target", &rec.url, "-n", "5", "--warmup", "0s", "-c", "1"];
    report(
        "sends-aggregate",
        &[
            &common[..],
            &["--query", "weather in Oslo", "--backends", "x,y"],
            &[
                "--mode",
                "blocking",
                "--fanout",
                "sequential",
                "--latency",
                "7ms",
            ],
            &["--no-cache", "--timeout", "3s"],
        ]
        .concat(),
    );
    let seen = rec.log.aggregates();
    // The probe's call, then the five measured.
    assert_eq!(seen.len(), 6, "{seen:?}");
    for s in &seen {
        let m = &s.message;
        assert_eq!(m.query, "weather in Oslo");
        assert_eq!(m.backends, ["x", "y"]);
        assert_eq!(m.mode, Some(Mode::Blocking as i32));
        assert_eq!(m.fanout, Some(Fanout::Sequential as i32));
        assert_eq!(m.delay_ms, Some(7));
        assert!(m.no_cache);
        assert_eq!(s.grpc_timeout.as_deref(), Some("3000000u"));
    }

    // --delay is the same override; --rpc stream calls AggregateStream.
    report(
        "sends-stream",
        &[&common[..], &["--rpc", "stream", "--delay", "9ms"]].concat(),
    );
    let streams = rec.log.streams();
    assert_eq!(streams.len(), 6);
    assert!(
        streams.iter().all(|s| s.message.delay_ms == Some(9)
            && !s.message.no_cache
            && s.grpc_timeout.is_none())
    );

    // --rpc fetch: the backend's request.
    report(
        "sends-fetch",
        &[
            &common[..],
            &[
                "--rpc",
                "fetch",
                "--query",
                "q",
                "--mode",
                "cpu",
                "--latency",
                "2ms",
            ],
        ]
        .concat(),
    );
    let fetches = rec.log.fetches();
    assert_eq!(fetches.len(), 6);
    for f in &fetches {
        assert_eq!(
            (f.message.query.as_str(), f.message.mode, f.message.delay_ms),
            ("q", Some(Mode::Cpu as i32), Some(2))
        );
    }
}

#[test]
fn how_much_load() {
    // Closed loop: -c callers, exactly, over --connections connections; -n measured calls.
    let rec = Recorder::start(Duration::from_millis(50));
    let r = report(
        "load-closed",
        &[
            "--target",
            &rec.url,
            "--rpc",
            "fetch",
            "-c",
            "6",
            "--connections",
            "3",
            "-n",
            "30",
            "--warmup",
            "0s",
        ],
    );
    assert_eq!(rec.log.peak.load(std::sync::atomic::Ordering::SeqCst), 6);
    assert_eq!(
        rec.log
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        3
    );
    assert_eq!(r["calls"].as_u64(), Some(30));
    assert_eq!(rec.log.fetches().len(), 31, "30 measured and the probe's");
    drop(rec);

    // --duration and --warmup: calls during the warm-up reach the server but not the report.
    let rec = Recorder::start(Duration::from_millis(50));
    let started = Instant::now();
    let r = report(
        "load-window",
        &[
            "--target", &rec.url, "--rpc", "fetch", "-c", "2", "-d", "1s", "--warmup", "1s",
        ],
    );
    let took = started.elapsed();
    assert_eq!(r["duration_s"].as_f64(), Some(1.0));
    assert_eq!(r["warmup_s"].as_f64(), Some(1.0));
    let (measured, sent) = (r["calls"].as_u64().unwrap(), rec.log.fetches().len() as u64);
    assert!(sent > measured * 3 / 2, "{sent} sent, {measured} measured");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    drop(rec);

    // Open loop: --rate, with -n; -c or --max-outstanding cap the calls outstanding.
    let rec = Recorder::start(Duration::from_millis(100));
    let r = report(
        "load-open",
        &[
            "--target", &rec.url, "--rpc", "fetch", "--rate", "100", "-n", "60", "--warmup", "0s",
        ],
    );
    assert_eq!(r["open_loop"]["due"].as_u64(), Some(60));
    assert_eq!(rec.log.fetches().len(), 61);
    assert!(rec.log.peak.load(std::sync::atomic::Ordering::SeqCst) > 4);
    for cap in [&["-c", "4"][..], &["--max-outstanding", "4"]] {
        let rec = Recorder::start(Duration::from_millis(100));
        let r = report(
            "load-cap",
            &[
                &[
                    "--target", &rec.url, "--rpc", "fetch", "--rate", "100", "-d", "1s",
                ][..],
                &["--warmup", "0s"],
                cap,
            ]
            .concat(),
        );
        assert!(
            rec.log.peak.load(std::sync::atomic::Ordering::SeqCst) <= 4,
            "{cap:?}"
        );
        assert_eq!(r["open_loop"]["max_outstanding"].as_u64(), Some(4));
        assert!(
            r["open_loop"]["dropped"].as_u64().unwrap() > 20,
            "{cap:?}: {r}"
        );
    }
}

#[test]
fn the_local_deployment() {
    // --local-backends, --replicas and --latency shape it; the report shows the endpoints.
    let r = report(
        "local-shape",
        &[
            "-c",
            "4",
            "-n",
            "60",
            "--warmup",
            "0s",
            "--local-backends",
            "2",
            "--replicas",
            "3",
            "--latency",
            "5ms",
        ],
    );
    let endpoints = r["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 6, "{endpoints:?}");
    for backend in ["b1", "b2"] {
        let of: Vec<&Value> = endpoints
            .iter()
            .filter(|e| e["backend"] == backend)
            .collect();
        assert_eq!(of.len(), 3);
        let share: f64 = of.iter().map(|e| e["share"].as_f64().unwrap()).sum();
        assert!((share - 1.0).abs() < 1e-9, "{of:?}");
    }
    assert!(r["p50_ms"].as_f64().unwrap() >= 5.0);

    // --mode, --fanout and the workers: blocked workers bound the rate, so more workers must
    // mean more calls per second (theory: 1 or 4 workers / 20 ms = 50 or 200/s).
    let rate = |args: &[&str]| {
        let r = report(
            "local-workers",
            &[
                &[
                    "-c",
                    "8",
                    "-d",
                    "1s",
                    "--warmup",
                    "300ms",
                    "--latency",
                    "20ms",
                ][..],
                args,
            ]
            .concat(),
        );
        r["calls_per_sec"].as_f64().unwrap()
    };
    let (one, four) = (
        rate(&[
            "--rpc",
            "fetch",
            "--mode",
            "blocking",
            "--backend-workers",
            "1",
        ]),
        rate(&[
            "--rpc",
            "fetch",
            "--mode",
            "blocking",
            "--backend-workers",
            "4",
        ]),
    );
    assert!(
        four > 2.0 * one,
        "--backend-workers 1: {one}/s, 4: {four}/s"
    );
    let agg = ["--fanout", "blocking", "--local-backends", "1"];
    let (one, four) = (
        rate(&[&agg[..], &["--aggregator-workers", "1"]].concat()),
        rate(&[&agg[..], &["--aggregator-workers", "4"]].concat()),
    );
    assert!(
        four > 2.0 * one,
        "--aggregator-workers 1: {one}/s, 4: {four}/s"
    );
}

#[test]
fn where_the_report_goes() {
    // --json and --chart, with {host} and {pid} filled in.
    let rec = Recorder::start(Duration::ZERO);
    let dir = scratch("outputs");
    let child = loadgen()
        .args(["run", "--target", &rec.url, "-n", "20", "--warmup", "0s"])
        .arg("--json")
        .arg(dir.join("run-{host}-{pid}.json"))
        .arg("--chart")
        .arg(dir.join("run-{pid}.svg"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    succeeded(&child.wait_with_output().unwrap());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let report = json(&dir.join(format!("run-{}-{pid}.json", host.trim())));
    assert_eq!(report["calls"].as_u64(), Some(20));
    let svg = std::fs::read_to_string(dir.join(format!("run-{pid}.svg"))).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("percentile"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_loadgen_s_own_threads() {
    // --threads N: N runtime workers (named loadgen, beside the main thread).
    let rec = Recorder::start(Duration::from_millis(20));
    let threads = |n: &str| {
        let mut child = loadgen()
            .args([
                "run",
                "--target",
                &rec.url,
                "-d",
                "2s",
                "--warmup",
                "0s",
                "--threads",
                n,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(1200));
        let named = std::fs::read_dir(format!("/proc/{}/task", child.id()))
            .unwrap()
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .filter(|comm| comm.trim() == "loadgen")
            .count();
        assert!(child.wait().unwrap().success());
        named
    };
    assert_eq!(threads("3"), 1 + 3);
    assert_eq!(
        threads("1"),
        1,
        "one thread: the main thread runs the runtime"
    );
}

#[test]
fn flags_that_cannot_apply_are_refused_with_the_reason() {
    let target = ["--target", "http://127.0.0.1:9"];
    for (args, want) in [
        (
            &[&target[..], &["--local-backends", "2"]].concat(),
            "--local-backends sizes",
        ),
        (
            &[&target[..], &["--replicas", "2"]].concat(),
            "--replicas starts",
        ),
        (
            &[&target[..], &["--latency", "uniform:1ms..5ms"]].concat(),
            "must be a fixed duration",
        ),
        (&vec!["--delay", "5ms"], "--delay is the override"),
        (
            &vec!["--rpc", "fetch", "--no-cache"],
            "apply to aggregator calls",
        ),
        (
            &vec!["--rpc", "fetch", "--replicas", "2"],
            "needs an aggregator",
        ),
        (&vec!["--drain", "1s"], "applies to an open loop"),
        (&vec!["--max-outstanding", "9"], "caps an open loop"),
    ] {
        let started = Instant::now();
        let stderr = failed(&loadgen().arg("run").args(args).output().unwrap());
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        // Refused before connecting or deploying anything.
        assert!(started.elapsed() < Duration::from_secs(2), "{args:?}");
    }
    let stderr = failed(
        &loadgen()
            .args([
                "compare",
                "--target",
                "http://127.0.0.1:9",
                "--replicas",
                "2",
            ])
            .output()
            .unwrap(),
    );
    assert!(stderr.contains("--replicas starts"), "{stderr}");
}

#[test]
fn health_checks() {
    // --service: a service the server does not serve is NOT_FOUND, said as a sentence.
    let server = backend::spawn(
        backend::Config::default(),
        1,
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    succeeded(&loadgen().args(["health", &server.url()]).output().unwrap());
    let stderr = failed(
        &loadgen()
            .args(["health", &server.url(), "--service", "no.such.Service"])
            .output()
            .unwrap(),
    );
    assert!(stderr.contains("not healthy: NOT_FOUND"), "{stderr}");
    assert!(
        !stderr.contains("Status {") && !stderr.contains("code:"),
        "{stderr}"
    );

    // --timeout: a server that accepts and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", silent.local_addr().unwrap());
    let started = Instant::now();
    let stderr = failed(
        &loadgen()
            .args(["health", &url, "--timeout", "300ms"])
            .output()
            .unwrap(),
    );
    let took = started.elapsed();
    assert!(stderr.contains("no answer within 300.0ms"), "{stderr}");
    assert!(
        !stderr.contains("source:") && !stderr.contains("Timeout expired"),
        "{stderr}"
    );
    assert!(
        took >= Duration::from_millis(250) && took < Duration::from_secs(3),
        "{took:?}"
    );
}

#[test]
fn replicas_behind_a_target_aggregator() {
    // The same report against a --target: the recorder's Stats say endpoint a served three
    // calls in four, b one.
    let rec = Recorder::start(Duration::ZERO);
    let r = report(
        "target-replicas",
        &["--target", &rec.url, "-n", "400", "--warmup", "0s"],
    );
    let shares: Vec<(String, f64)> = r["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["address"].as_str().unwrap().to_owned(),
                e["share"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(shares.len(), 2, "{shares:?}");
    assert!(
        (shares[0].1 - 0.75).abs() < 0.01 && (shares[1].1 - 0.25).abs() < 0.01,
        "{shares:?}"
    );
}
