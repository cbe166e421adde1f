//! Measurements of one load run: HDR histograms (bounded memory whatever the call count) and
//! counts per gRPC status. Each worker keeps its own and they are merged at the end, so the hot
//! path takes no lock and sends no message.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use tonic::Code;

/// Latencies are recorded in microseconds, from 1 µs to one hour, at 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What one worker (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Call latency: for unary calls until the reply; for streams until the summary. In rate
    /// mode measured from the call's intended start.
    pub latency: Histogram<u64>,
    /// Streams only: time to the first result.
    pub first_result: Histogram<u64>,
    /// Calls per gRPC status code (index = code).
    pub status: [u64; 17],
    /// Successful aggregate calls in which some backend failed or timed out.
    pub degraded: u64,
    /// Streams only: result events received.
    pub stream_results: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: histogram(),
            first_result: histogram(),
            status: [0; 17],
            degraded: 0,
            stream_results: 0,
        }
    }
}

fn micros(d: Duration) -> u64 {
    (d.as_micros() as u64).max(1)
}

impl Stats {
    /// Records one finished call.
    pub fn record(&mut self, code: Code, latency: Duration) {
        self.status[code as usize] += 1;
        self.latency.saturating_record(micros(latency));
    }

    pub fn record_first_result(&mut self, after: Duration) {
        self.first_result.saturating_record(micros(after));
    }

    /// Adds another worker's measurements.
    pub fn merge(&mut self, other: &Stats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.first_result.add(&other.first_result);
        for (a, b) in self.status.iter_mut().zip(other.status) {
            *a += b;
        }
        self.degraded += other.degraded;
        self.stream_results += other.stream_results;
    }

    pub fn calls(&self) -> u64 {
        self.status.iter().sum()
    }

    pub fn errors(&self) -> u64 {
        self.calls() - self.status[Code::Ok as usize]
    }

    /// Latency percentiles in milliseconds.
    pub fn percentiles(&self) -> Percentiles {
        Percentiles::of(&self.latency)
    }
}

/// The percentiles a report shows, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub p9999_ms: f64,
    pub max_ms: f64,
}

impl Percentiles {
    pub fn of(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        Self {
            p50_ms: ms(0.5),
            p90_ms: ms(0.9),
            p99_ms: ms(0.99),
            p999_ms: ms(0.999),
            p9999_ms: ms(0.9999),
            max_ms: h.max() as f64 / 1e3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_reads_percentiles() {
        let mut a = Stats::default();
        let mut b = Stats::default();
        for ms in 1..=100 {
            a.record(Code::Ok, Duration::from_millis(ms));
        }
        b.record(Code::Unavailable, Duration::from_secs(2));
        a.merge(&b);
        assert_eq!((a.calls(), a.errors()), (101, 1));
        let p = a.percentiles();
        assert!((p.p50_ms - 51.0).abs() < 0.5, "{p:?}");
        assert!((p.max_ms - 2000.0).abs() < 2.0, "{p:?}");
    }
}
