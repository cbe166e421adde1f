//! `loadgen merge`: the reports of several loadgens that drove one target together, added up
//! into one, for load beyond what one machine can generate (as k6 on Kubernetes or Locust's
//! workers do).
//!
//! Exact where it can be: each report carries its latency histograms in HdrHistogram's
//! portable form, and histograms add up exactly, so the merged percentiles are those of all the
//! calls together, not an average of percentiles. Calls, status counts and rates add up (the
//! rates are each run's over its own window: the windows should overlap, and `--start-at`
//! makes them; merge warns when they do not). The theory adds up the loads' own bounds and keeps
//! the target's shared ones (`theory::combine`). Per-replica shares are not added: the
//! aggregator counts every loadgen's calls, so each run's figures already hold the others';
//! the merged report keeps those of the run with the longest window.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use tonic::Code;

use crate::cli::MergeArgs;
use crate::model::{Histograms, OpenLoop, RunReport, StreamReport, per_sec};
use crate::report;
use crate::stats::{self, Percentiles, Stats};
use crate::theory;

/// Reads, checks and adds up the reports `args` names.
pub fn merge(args: &MergeArgs) -> anyhow::Result<RunReport> {
    let files = expand(&args.reports)?;
    let mut runs = Vec::with_capacity(files.len());
    for file in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let run: RunReport = serde_json::from_str(&text).map_err(|e| {
            anyhow!(
                "{} is not a report of `loadgen run --json` ({e})",
                file.display()
            )
        })?;
        let stats = stats_of(&run).map_err(|e| anyhow!("{}: {e}", file.display()))?;
        runs.push((file.display().to_string(), run, stats));
    }
    combine(runs)
}

/// The files named, a folder standing for the run reports in it.
fn expand(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the folder {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        found.sort();
        let before = files.len();
        for file in found {
            match is_run_report(&file) {
                Ok(true) => files.push(file),
                Ok(false) => eprintln!("skipping {}: not a run report", file.display()),
                Err(why) => eprintln!("skipping {}: {why}", file.display()),
            }
        }
        if files.len() == before {
            bail!(
                "{} holds no run reports (files written by `loadgen run --json`)",
                path.display()
            );
        }
    }
    Ok(files)
}

/// Whether `file` is a single run's report (with histograms, and not itself a merge).
fn is_run_report(file: &Path) -> Result<bool, String> {
    let text = std::fs::read_to_string(file).map_err(|e| e.to_string())?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    Ok(value.get("histograms").is_some_and(|h| !h.is_null())
        && value
            .get("merged_from")
            .is_none_or(|m| m.as_array().is_none_or(Vec::is_empty)))
}

/// A report's measurements, from its histograms and counts.
fn stats_of(run: &RunReport) -> Result<Stats, String> {
    let Some(h) = &run.histograms else {
        return Err(
            "the report has no histograms (it was written by a loadgen older than \
                    `merge`): run it again"
                .into(),
        );
    };
    if h.encoding != stats::ENCODING {
        return Err(format!(
            "its histograms are encoded as `{}`, not as this loadgen reads them (`{}`)",
            h.encoding,
            stats::ENCODING
        ));
    }
    let mut s = Stats {
        latency: stats::decode(&h.latency).map_err(|e| format!("latency: {e}"))?,
        ..Stats::default()
    };
    if let Some(first) = &h.first_result {
        s.first_result = stats::decode(first).map_err(|e| format!("first result: {e}"))?;
    }
    for (name, n) in &run.status_counts {
        let code = (0..17)
            .map(Code::from)
            .find(|c| fanout_proto::code_name(*c) == name)
            .ok_or_else(|| format!("`{name}` in status_counts is not a gRPC status"))?;
        s.status[code as usize] += n;
    }
    if s.calls() != s.latency.len() {
        return Err(format!(
            "its status counts add up to {} calls but its latency histogram holds {}",
            s.calls(),
            s.latency.len()
        ));
    }
    s.degraded = run.degraded;
    s.stream_results = run.stream.as_ref().map_or(0, |st| st.results);
    Ok(s)
}

/// Adds up `runs` (file name, report, measurements).
fn combine(runs: Vec<(String, RunReport, Stats)>) -> anyhow::Result<RunReport> {
    let (_, first, _) = runs.first().ok_or_else(|| anyhow!("no reports to merge"))?;
    if let Some((file, other, _)) = runs.iter().find(|(_, r, _)| r.rpc != first.rpc) {
        bail!(
            "{file} measured --rpc {} but {} measured --rpc {}: only runs of one kind of call add up",
            other.rpc,
            runs[0].0,
            first.rpc
        );
    }
    if runs.iter().any(|(_, r, _)| r.target != first.target) {
        eprintln!("note: the reports name different targets; merging them as one");
    }
    warn_unless_overlapping(&runs);

    let mut stats = Stats::default();
    for (_, _, s) in &runs {
        stats.merge(s);
    }
    let reports: Vec<&RunReport> = runs.iter().map(|(_, r, _)| r).collect();
    let sum = |f: fn(&RunReport) -> f64| reports.iter().map(|r| f(r)).sum::<f64>();
    let longest = reports
        .iter()
        .max_by(|a, b| a.duration_s.total_cmp(&b.duration_s))
        .expect("at least one report");
    let duration_s = longest.duration_s;
    let calls_per_sec = sum(|r| r.calls_per_sec);
    let bounds: Vec<Vec<theory::Bound>> = reports.iter().map(|r| r.theory_bounds.clone()).collect();
    let theory = theory::combine(&bounds);
    let stream = first.stream.is_some();
    let kinds: Vec<&str> = reports.iter().map(|r| r.load.as_str()).collect();
    Ok(RunReport {
        target: first.target.clone(),
        rpc: first.rpc.clone(),
        load: if kinds.iter().all(|k| *k == kinds[0]) {
            kinds[0].into()
        } else {
            "mixed".into()
        },
        concurrency: reports.iter().map(|r| r.concurrency).sum(),
        rate: reports.iter().map(|r| r.rate).sum(),
        connections: reports.iter().map(|r| r.connections).sum(),
        started_at: reports.iter().filter_map(|r| r.started_at.clone()).min(),
        duration_s,
        warmup_s: reports.iter().map(|r| r.warmup_s).fold(0.0, f64::max),
        interrupted: reports.iter().any(|r| r.interrupted),
        calls: stats.calls(),
        errors: stats.errors(),
        degraded: stats.degraded,
        calls_per_sec,
        latency: stats.percentiles(),
        status_counts: report::status_counts(&stats),
        open_loop: open_loops(&reports),
        stream: stream.then(|| StreamReport {
            first_result: Percentiles::of(&stats.first_result),
            results: stats.stream_results,
            results_per_sec: sum(|r| {
                r.stream
                    .as_ref()
                    .map_or(0.0, |s| per_sec(s.results, r.duration_s))
            }),
        }),
        endpoints: longest.endpoints.clone(),
        efficiency: theory.as_ref().map(|t| calls_per_sec / t.calls_per_sec),
        theory,
        theory_bounds: Vec::new(),
        histograms: Some(Histograms {
            encoding: stats::ENCODING.into(),
            latency: stats::encode(&stats.latency),
            first_result: stream.then(|| stats::encode(&stats.first_result)),
        }),
        merged_from: runs.iter().map(|(f, _, _)| f.clone()).collect(),
    })
}

/// The open loops' accounts added up (`None` unless every run was one). The peak is the sum
/// of each run's peak: at most what was outstanding at once at the target.
fn open_loops(reports: &[&RunReport]) -> Option<OpenLoop> {
    let loops: Vec<&OpenLoop> = reports
        .iter()
        .map(|r| r.open_loop.as_ref())
        .collect::<Option<_>>()?;
    let add = |f: fn(&OpenLoop) -> u64| loops.iter().map(|o| f(o)).sum::<u64>();
    Some(OpenLoop {
        offered_rate: loops.iter().map(|o| o.offered_rate).sum(),
        due: add(|o| o.due),
        sent: add(|o| o.sent),
        dropped: add(|o| o.dropped),
        cut_off: add(|o| o.cut_off),
        peak_outstanding: add(|o| o.peak_outstanding),
        max_outstanding: add(|o| o.max_outstanding),
        drain_s: loops.iter().map(|o| o.drain_s).fold(0.0, f64::max),
    })
}

/// Rates add up only over windows that overlap: says so on stderr when some do not.
fn warn_unless_overlapping(runs: &[(String, RunReport, Stats)]) {
    let windows: Vec<(&str, SystemTime, SystemTime)> = runs
        .iter()
        .filter_map(|(file, r, _)| {
            let start = humantime::parse_rfc3339_weak(r.started_at.as_deref()?).ok()?;
            Some((
                file.as_str(),
                start,
                start + Duration::from_secs_f64(r.duration_s),
            ))
        })
        .collect();
    if windows.len() < runs.len() {
        eprintln!("note: some reports do not say when they ran; cannot check that they overlap");
        return;
    }
    let latest_start = windows.iter().max_by_key(|w| w.1).expect("at least one");
    let earliest_end = windows.iter().min_by_key(|w| w.2).expect("at least one");
    if latest_start.1 >= earliest_end.2 {
        eprintln!(
            "WARNING: {} started measuring after {} had finished: the runs did not drive the \
             target together, so their summed rate is not a rate the target saw (start them \
             with the same --start-at)",
            latest_start.0, earliest_end.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report as `run` writes it, from `stats` over `secs`.
    fn report(stats: &Stats, secs: f64, started_at: &str) -> RunReport {
        RunReport {
            target: "http://t".into(),
            rpc: "aggregate".into(),
            load: "rate".into(),
            concurrency: 100,
            rate: Some(stats.calls() as f64 / secs),
            connections: 4,
            started_at: Some(started_at.into()),
            duration_s: secs,
            warmup_s: 1.0,
            interrupted: false,
            calls: stats.calls(),
            errors: stats.errors(),
            degraded: stats.degraded,
            calls_per_sec: stats.calls() as f64 / secs,
            latency: stats.percentiles(),
            status_counts: report::status_counts(stats),
            open_loop: None,
            stream: None,
            endpoints: Vec::new(),
            theory: None,
            theory_bounds: Vec::new(),
            efficiency: None,
            histograms: Some(Histograms {
                encoding: stats::ENCODING.into(),
                latency: stats::encode(&stats.latency),
                first_result: None,
            }),
            merged_from: Vec::new(),
        }
    }

    fn through_json(r: &RunReport) -> (String, RunReport, Stats) {
        let back: RunReport = serde_json::from_str(&serde_json::to_string(r).unwrap()).unwrap();
        let stats = stats_of(&back).unwrap();
        ("r.json".into(), back, stats)
    }

    #[test]
    fn merged_reports_are_the_sum_of_their_calls() {
        let (mut a, mut b, mut all) = (Stats::default(), Stats::default(), Stats::default());
        for i in 0..3_000u64 {
            let (code, us) = match i % 100 {
                0 => (Code::Unavailable, 200_000 + i),
                _ => (Code::Ok, 40_000 + (i * 7919) % 30_000),
            };
            let (s, latency) = (
                if i % 3 == 0 { &mut a } else { &mut b },
                Duration::from_micros(us),
            );
            s.record(code, latency);
            all.record(code, latency);
        }
        let merged = combine(vec![
            through_json(&report(&a, 10.0, "2030-01-01T00:00:00Z")),
            through_json(&report(&b, 10.0, "2030-01-01T00:00:00.2Z")),
        ])
        .unwrap();
        assert_eq!((merged.calls, merged.errors), (3_000, 30));
        assert_eq!(merged.status_counts["UNAVAILABLE"], 30);
        assert!((merged.calls_per_sec - 300.0).abs() < 1e-9);
        // Exact: the percentiles of every call together, not an average of percentiles.
        assert_eq!(merged.latency, all.percentiles());
        let h = stats::decode(&merged.histograms.unwrap().latency).unwrap();
        assert_eq!(h, all.latency);
        assert_eq!(merged.merged_from.len(), 2);
    }

    #[test]
    fn reports_that_cannot_add_up_are_refused_with_the_reason() {
        let mut s = Stats::default();
        s.record(Code::Ok, Duration::from_millis(5));
        let fine = report(&s, 1.0, "2030-01-01T00:00:00Z");

        let mut fetch = fine.clone();
        fetch.rpc = "fetch".into();
        let err = combine(vec![through_json(&fine), through_json(&fetch)]).unwrap_err();
        assert!(err.to_string().contains("only runs of one kind"), "{err}");

        let mut old = fine.clone();
        old.histograms = None;
        assert!(stats_of(&old).unwrap_err().contains("no histograms"));

        let mut lying = fine.clone();
        lying.status_counts.insert("OK".into(), 2);
        assert!(stats_of(&lying).unwrap_err().contains("add up to 2"));

        let mut unknown = fine;
        unknown.status_counts.insert("SORT_OF_OK".into(), 1);
        assert!(
            stats_of(&unknown)
                .unwrap_err()
                .contains("not a gRPC status")
        );
    }

    #[test]
    fn open_loop_accounts_add_up() {
        let one = OpenLoop {
            offered_rate: 100.0,
            due: 1000,
            sent: 990,
            dropped: 10,
            cut_off: 1,
            peak_outstanding: 20,
            max_outstanding: 20,
            drain_s: 5.0,
        };
        let mut s = Stats::default();
        s.record(Code::Ok, Duration::from_millis(5));
        let mut r = report(&s, 10.0, "2030-01-01T00:00:00Z");
        r.open_loop = Some(one.clone());
        let both = open_loops(&[&r, &r]).unwrap();
        assert_eq!(
            (both.offered_rate, both.due, both.dropped),
            (200.0, 2000, 20)
        );
    }
}
