//! Turning measurements into what people read: a table on stdout and a JSON document (whose
//! name may hold `{host}` and `{pid}`, see [`output_path`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;
use tonic::Code;

use fanout_proto::cli::fmt_duration;

use crate::model::{EndpointShare, OpenLoop, Row, RunReport};
use crate::stats::Stats;

/// Status counts by code name, only the codes seen.
pub fn status_counts(stats: &Stats) -> BTreeMap<String, u64> {
    stats
        .status
        .iter()
        .enumerate()
        .filter(|(_, n)| **n > 0)
        .map(|(code, n)| {
            (
                fanout_proto::code_name(Code::from(code as i32)).to_owned(),
                *n,
            )
        })
        .collect()
}

/// `12,345.6`-style numbers for tables.
pub fn thousands(x: f64, decimals: usize) -> String {
    let s = format!("{x:.decimals$}");
    let (int, frac) = s.split_once('.').map_or((s.as_str(), ""), |(i, f)| (i, f));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    if frac.is_empty() {
        format!("{sign}{out}")
    } else {
        format!("{sign}{out}.{frac}")
    }
}

/// A latency for tables: `51.2ms`, `1.23s`.
pub fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2}s", x / 1000.0)
    } else if x >= 10.0 {
        format!("{x:.1}ms")
    } else {
        format!("{x:.2}ms")
    }
}

/// One run's readable table, on stdout.
pub fn print_run(report: &RunReport) {
    let p = &report.latency;
    let load = match (&report.open_loop, report.rate) {
        (Some(o), _) => format!(
            "open loop at {} calls/s (at most {} outstanding, {} drain)",
            thousands(o.offered_rate, 0),
            thousands(o.max_outstanding as f64, 0),
            fmt_duration(Duration::from_secs_f64(o.drain_s))
        ),
        (None, Some(r)) => format!("open loop at {} calls/s", thousands(r, 0)),
        (None, None) => format!("closed loop, {} callers", report.concurrency),
    };
    if !report.merged_from.is_empty() {
        println!("merged    {} reports", report.merged_from.len());
    }
    println!("target    {} ({})", report.target, report.rpc);
    println!(
        "load      {load} over {} connection(s); {:.2}s measured after {:.1}s warm-up{}",
        report.connections,
        report.duration_s,
        report.warmup_s,
        if report.interrupted {
            " (interrupted)"
        } else {
            ""
        }
    );
    match &report.open_loop {
        None => println!(
            "calls     {} = {} calls/s; errors {}; degraded {}",
            thousands(report.calls as f64, 0),
            thousands(report.calls_per_sec, 1),
            report.errors,
            report.degraded
        ),
        Some(o) => println!(
            "calls     {} calls/s answered in the window, offered {}; {} of the calls due in \
             it answered; errors {}; degraded {}",
            thousands(report.calls_per_sec, 1),
            thousands(o.offered_rate, 0),
            thousands(report.calls as f64, 0),
            report.errors,
            report.degraded
        ),
    }
    if let Some(o) = &report.open_loop {
        print_open_loop(o, report.calls_per_sec);
    }
    println!(
        "latency   p50 {}  p90 {}  p99 {}  p99.9 {}  p99.99 {}  max {}",
        ms(p.p50_ms),
        ms(p.p90_ms),
        ms(p.p99_ms),
        ms(p.p999_ms),
        ms(p.p9999_ms),
        ms(p.max_ms)
    );
    let status: Vec<String> = report
        .status_counts
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    println!("status    {}", status.join(", "));
    if let Some(s) = &report.stream {
        println!(
            "stream    first result p50 {}, p99 {}; {} results/s",
            ms(s.first_result.p50_ms),
            ms(s.first_result.p99_ms),
            thousands(s.results_per_sec, 1)
        );
    }
    print_endpoints(&report.endpoints);
    if let (Some(t), Some(e)) = (&report.theory, report.efficiency) {
        println!(
            "theory    {} calls/s, limited by {} ({}): measured {:.1}% of it",
            thousands(t.calls_per_sec, 1),
            t.limit,
            t.formula,
            e * 100.0
        );
    }
}

/// The open loop's account, and loud lines for calls dropped or cut off, or a target behind.
fn print_open_loop(o: &OpenLoop, answered_per_sec: f64) {
    println!(
        "schedule  {} calls due: {} sent, {} dropped, {} cut off; at most {} outstanding at once",
        thousands(o.due as f64, 0),
        thousands(o.sent as f64, 0),
        thousands(o.dropped as f64, 0),
        thousands(o.cut_off as f64, 0),
        thousands(o.peak_outstanding as f64, 0)
    );
    if o.dropped > 0 {
        println!(
            "DROPPED   {} of {} calls ({:.1}%) fell due with {} calls outstanding (the cap, \
             --max-outstanding) and were not sent: the target was slower than the offered \
             rate. The rate and latencies above are of the calls that were sent.",
            thousands(o.dropped as f64, 0),
            thousands(o.due as f64, 0),
            100.0 * o.dropped as f64 / o.due.max(1) as f64,
            thousands(o.max_outstanding as f64, 0)
        );
    }
    if o.dropped == 0 && answered_per_sec < 0.95 * o.offered_rate {
        println!(
            "BEHIND    the target answered {} calls/s of the {} offered: the calls queued (up \
             to {} outstanding) and their answers came late, after the window for some.",
            thousands(answered_per_sec, 1),
            thousands(o.offered_rate, 0),
            thousands(o.peak_outstanding as f64, 0)
        );
    }
    if o.cut_off > 0 {
        println!(
            "CUT OFF   {} calls sent were still unanswered when the {} drain ran out: they are \
             in no latency and no status count.",
            thousands(o.cut_off as f64, 0),
            fmt_duration(Duration::from_secs_f64(o.drain_s))
        );
    }
}

/// Each backend endpoint's share of the calls its backend served, one line per backend.
fn print_endpoints(endpoints: &[EndpointShare]) {
    let mut backends: Vec<&str> = endpoints.iter().map(|e| e.backend.as_str()).collect();
    backends.dedup();
    for (i, backend) in backends.iter().enumerate() {
        let parts: Vec<String> = endpoints
            .iter()
            .filter(|e| e.backend == *backend)
            .map(|e| {
                let mut part = format!(
                    "{} {:.1}% ({})",
                    e.address,
                    e.share * 100.0,
                    thousands(e.served as f64, 0)
                );
                if e.failed > 0 {
                    part += &format!(", {} failed", e.failed);
                }
                if e.ejections > 0 {
                    part += &format!(", ejected {}x", e.ejections);
                }
                part
            })
            .collect();
        let head = if i == 0 { "replicas" } else { "" };
        println!("{head:<9} {backend}: {}", parts.join("; "));
    }
}

/// `path` with `{host}` and `{pid}` replaced by this machine's hostname and the process id, so
/// loadgens writing into one folder (containers, pods) each write a file of their own.
pub fn output_path(path: &Path) -> PathBuf {
    let text = path.to_string_lossy();
    if !text.contains("{host}") && !text.contains("{pid}") {
        return path.to_owned();
    }
    // The kernel's name for this host: a container's or a pod's own.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    PathBuf::from(
        text.replace("{host}", &host)
            .replace("{pid}", &std::process::id().to_string()),
    )
}

/// The head of `compare`'s table.
pub const COMPARE_HEADER: &str = "fanout      backend mode      calls/s     theory    eff.  limited by            p50       p99   errors degraded";

/// One row of `compare`'s table, on stdout, and why it measures the target's failures when
/// it does.
pub fn print_row(r: &Row) {
    println!(
        "{:<11} {:<15} {:>10} {:>10} {:>6.1}%  {:<18} {:>8} {:>9} {:>8} {:>8}",
        r.fanout,
        r.backend_mode,
        thousands(r.calls_per_sec, 1),
        thousands(r.theory_calls_per_sec, 1),
        r.efficiency * 100.0,
        r.limit,
        ms(r.p50_ms),
        ms(r.p99_ms),
        r.errors,
        r.degraded
    );
    if r.degraded > 0 || r.errors > 0 {
        println!(
            "            ^ {} of {} calls had a failed or timed-out backend ({} failed outright): \
             this row measures the target's deadlines and failures, not the configuration's \
             capacity (start the aggregator with a longer --deadline and --attempt-timeout)",
            r.degraded, r.calls, r.errors
        );
    }
}

/// Writes `value` as pretty JSON to `path`, creating its folder.
pub fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n").with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(1234567.891, 1), "1,234,567.9");
        assert_eq!(thousands(999.0, 0), "999");
        assert_eq!(thousands(-1000.0, 0), "-1,000");
        assert_eq!(ms(51.234), "51.2ms");
        assert_eq!(ms(2.5), "2.50ms");
        assert_eq!(ms(1234.0), "1.23s");
    }
}
