//! Load from several machines, added up: two loadgens started together with --start-at against
//! one backend, each writing its report (named by {pid}) into one folder, then `loadgen merge`
//! of the folder. The merged histogram is exactly the two added up, the counts and rates are
//! their sums; files that are not run reports are refused or skipped with the reason.

use std::process::Stdio;
use std::time::{Duration, SystemTime};

use crate::harness::{failed, json, loadgen, scratch, succeeded};
use serde_json::Value;

fn histogram(report: &Value) -> hdrhistogram::Histogram<u64> {
    loadgen::stats::decode(report["histograms"]["latency"].as_str().unwrap()).unwrap()
}

#[test]
fn two_runs_started_together_merge_exactly() {
    let config = backend::Config {
        latency: backend::latency::LatencySpec::Fixed(Duration::from_millis(20)),
        ..backend::Config::default()
    };
    let server = backend::spawn(config, 2, "127.0.0.1:0".parse().unwrap()).unwrap();
    let dir = scratch("merge");
    let start_at = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3));
    let runs: Vec<_> = (0..2)
        .map(|_| {
            loadgen()
                .args(["run", "--rpc", "fetch", "--target", &server.url()])
                .args(["--rate", "100", "-d", "1s", "--warmup", "200ms"])
                .args(["--start-at", &start_at.to_string()])
                .arg("--json")
                .arg(dir.join("run-{pid}.json"))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for run in runs {
        succeeded(&run.wait_with_output().unwrap());
    }
    // Something else in the folder, as compose's ./out has: skipped, not merged.
    std::fs::write(dir.join("compare.json"), "{\"scenarios\": []}").unwrap();
    let reports: Vec<Value> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("run-"))
        .map(|p| json(&p))
        .collect();
    assert_eq!(reports.len(), 2, "one report per loadgen, named by its pid");

    let merged_path = dir.join("merged.json");
    let out = loadgen()
        .arg("merge")
        .arg(&dir)
        .arg("--json")
        .arg(&merged_path)
        .output()
        .unwrap();
    let stdout = succeeded(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("merged    2 reports"), "{stdout}");
    assert!(
        stderr.contains("compare.json: not a run report"),
        "{stderr}"
    );
    assert!(!stderr.contains("WARNING"), "the runs overlapped: {stderr}");
    let merged = json(&merged_path);

    // Exact: the merged histogram is the two added up, count for count.
    let mut sum = histogram(&reports[0]);
    sum.add(histogram(&reports[1])).unwrap();
    assert_eq!(histogram(&merged), sum);
    assert_eq!(
        merged["p99_ms"].as_f64().unwrap(),
        sum.value_at_quantile(0.99) as f64 / 1e3
    );
    let total = |key: &str| {
        reports
            .iter()
            .map(|r| r[key].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(merged["calls"].as_u64().unwrap(), total("calls"));
    assert_eq!(merged["calls"].as_u64().unwrap(), 200, "2 × 1 s at 100/s");
    assert_eq!(merged["status_counts"]["OK"].as_u64().unwrap(), 200);
    let rates: f64 = reports
        .iter()
        .map(|r| r["calls_per_sec"].as_f64().unwrap())
        .sum();
    assert!((merged["calls_per_sec"].as_f64().unwrap() - rates).abs() < 1e-9);
    assert_eq!(merged["open_loop"]["offered_rate"].as_f64(), Some(200.0));
    assert_eq!(merged["merged_from"].as_array().unwrap().len(), 2);

    // Merging the merge again would count every call twice: a folder's merges are skipped.
    let again = loadgen().arg("merge").arg(&dir).output().unwrap();
    assert!(String::from_utf8_lossy(&again.stderr).contains("merged.json: not a run report"));
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn files_that_are_not_run_reports_are_refused_by_name() {
    let dir = scratch("merge-bad");
    let compare = dir.join("compare.json");
    std::fs::write(&compare, "{\"scenarios\": []}").unwrap();
    let stderr = failed(&loadgen().arg("merge").arg(&compare).output().unwrap());
    assert!(
        stderr.contains("compare.json is not a report of `loadgen run --json`"),
        "{stderr}"
    );
    let missing = dir.join("nowhere.json");
    let stderr = failed(&loadgen().arg("merge").arg(&missing).output().unwrap());
    assert!(
        stderr.contains("cannot read") && stderr.contains("nowhere.json"),
        "{stderr}"
    );
    let empty = scratch("merge-empty");
    let stderr = failed(&loadgen().arg("merge").arg(&empty).output().unwrap());
    assert!(stderr.contains("holds no run reports"), "{stderr}");
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(empty);
}
