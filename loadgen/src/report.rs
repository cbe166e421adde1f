//! Turning measurements into what people read: a table on stdout and a JSON document.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Serialize;
use tonic::Code;

use crate::stats::{Percentiles, Stats};
use crate::theory::Bound;
use crate::workers::Outcome;

/// The report of one `loadgen run`; `calls_per_sec` and the percentiles at the top level.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub target: String,
    pub rpc: String,
    /// "closed" (callers) or "rate" (open loop).
    pub load: &'static str,
    pub concurrency: u32,
    pub rate: Option<f64>,
    pub connections: u32,
    /// Length of the measured window, in seconds.
    pub duration_s: f64,
    pub warmup_s: f64,
    pub interrupted: bool,
    pub calls: u64,
    pub errors: u64,
    /// Successful aggregate calls in which at least one backend failed or timed out.
    pub degraded: u64,
    pub calls_per_sec: f64,
    #[serde(flatten)]
    pub latency: Percentiles,
    pub status_counts: BTreeMap<String, u64>,
    /// Streams only.
    pub stream: Option<StreamReport>,
    pub theory: Option<Bound>,
    /// calls_per_sec / theory.calls_per_sec.
    pub efficiency: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StreamReport {
    /// Time to the first result event.
    pub first_result: Percentiles,
    pub results: u64,
    pub results_per_sec: f64,
}

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

/// Calls per second over the measured window.
pub fn rate(outcome: &Outcome) -> f64 {
    let secs = outcome.elapsed.as_secs_f64();
    if secs > 0.0 {
        outcome.stats.calls() as f64 / secs
    } else {
        0.0
    }
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

impl RunReport {
    /// The readable table.
    pub fn print(&self) {
        let p = &self.latency;
        let load = match self.rate {
            Some(r) => format!(
                "open loop at {} calls/s, at most {} outstanding",
                thousands(r, 0),
                self.concurrency
            ),
            None => format!("closed loop, {} callers", self.concurrency),
        };
        println!("target    {} ({})", self.target, self.rpc);
        println!(
            "load      {load} over {} connection(s); {:.2}s measured after {:.1}s warm-up{}",
            self.connections,
            self.duration_s,
            self.warmup_s,
            if self.interrupted {
                " (interrupted)"
            } else {
                ""
            }
        );
        println!(
            "calls     {} = {} calls/s; errors {}; degraded {}",
            thousands(self.calls as f64, 0),
            thousands(self.calls_per_sec, 1),
            self.errors,
            self.degraded
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
        let status: Vec<String> = self
            .status_counts
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!("status    {}", status.join(", "));
        if let Some(s) = &self.stream {
            println!(
                "stream    first result p50 {}, p99 {}; {} results/s",
                ms(s.first_result.p50_ms),
                ms(s.first_result.p99_ms),
                thousands(s.results_per_sec, 1)
            );
        }
        if let (Some(t), Some(e)) = (&self.theory, self.efficiency) {
            println!(
                "theory    {} calls/s, limited by {} ({}): measured {:.1}% of it",
                thousands(t.calls_per_sec, 1),
                t.limit,
                t.formula,
                e * 100.0
            );
        }
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
