//! Turning measurements into what people read: a table on stdout and a JSON document.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use tonic::Code;

use crate::model::{Row, RunReport};
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
    let load = match report.rate {
        Some(r) => format!(
            "open loop at {} calls/s, at most {} outstanding",
            thousands(r, 0),
            report.concurrency
        ),
        None => format!("closed loop, {} callers", report.concurrency),
    };
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
    println!(
        "calls     {} = {} calls/s; errors {}; degraded {}",
        thousands(report.calls as f64, 0),
        thousands(report.calls_per_sec, 1),
        report.errors,
        report.degraded
    );
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
