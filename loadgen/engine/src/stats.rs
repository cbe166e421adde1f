//! Measurements of one load run: HDR histograms (bounded memory whatever the call count) and
//! counts per gRPC status. A run keeps one set per worker thread of the loadgen, not per caller
//! (see `workers::Shards`), and adds them up at the end; histograms add up exactly, also across
//! runs on several machines, through their portable serialized form ([`encode`], [`decode`]).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::Code;

/// What [`encode`] writes, named in every report so a reader knows how to decode it.
pub const ENCODING: &str = "HdrHistogram V2 deflate, base64; microseconds";

/// Latencies are recorded in microseconds, from 1 µs to one hour, at 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

/// What one worker (or, merged, the whole run) measured.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Call latency: for unary calls until the reply; for streams until the summary. In rate
    /// mode measured from the call's intended start.
    pub latency: Histogram<u64>,
    /// The latency of the calls the server admitted: every status but RESOURCE_EXHAUSTED (a
    /// call shed, answered at once). What `overload` holds against the backends' latency.
    pub admitted: Histogram<u64>,
    /// Streams only: time to the first result.
    pub first_result: Histogram<u64>,
    /// The latency of the good calls: OK, and no backend's part failed that the caller did not
    /// excuse (see `Caller::excusing`). What `resilience` reports: a fast failure must not
    /// flatter a configuration's percentiles.
    pub good: Histogram<u64>,
    /// Calls per gRPC status code (index = code).
    pub status: [u64; 17],
    /// Successful aggregate calls in which some backend failed or timed out (other than the
    /// one the caller excused, if any).
    pub degraded: u64,
    /// Streams only: result events received.
    pub stream_results: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency: histogram(),
            admitted: histogram(),
            first_result: histogram(),
            good: histogram(),
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
        if code != Code::ResourceExhausted {
            self.admitted.saturating_record(micros(latency));
        }
    }

    /// Records a good call's latency (besides [`Stats::record`]).
    pub fn record_good(&mut self, latency: Duration) {
        self.good.saturating_record(micros(latency));
    }

    pub fn record_first_result(&mut self, after: Duration) {
        self.first_result.saturating_record(micros(after));
    }

    /// Adds another worker's (or run's) measurements.
    pub fn merge(&mut self, other: &Stats) {
        // Both sides hold 1 µs to an hour (a decoded histogram is checked for that), so
        // adding cannot fail.
        let _ = self.latency.add(&other.latency);
        let _ = self.admitted.add(&other.admitted);
        let _ = self.first_result.add(&other.first_result);
        let _ = self.good.add(&other.good);
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

/// What the calls recording into one shard measured.
#[derive(Debug, Default)]
pub struct Measured {
    pub stats: Stats,
    /// When its last measured call finished.
    pub last: Option<Instant>,
}

/// One set of measurements per worker thread of the loadgen, not one per caller: a set of
/// histograms is about 375 KB, and a run may have twenty thousand callers.
///
/// Connection `k` records into shard `k mod W` (W: the runtime's worker threads, or fewer when
/// there are fewer connections). Every call over a connection runs on that connection's task,
/// and a task runs on one thread at a time, so a shard's lock is all but uncontended; the
/// driver reads the shards after stopping the work, so a call abandoned mid-way loses nothing
/// already measured.
#[derive(Debug)]
pub struct Shards {
    shards: Vec<Arc<Mutex<Measured>>>,
}

impl Shards {
    /// Shards for `connections` connections on a runtime of `threads` worker threads.
    pub fn new(connections: usize, threads: usize) -> Self {
        let n = connections.min(threads).max(1);
        Shards {
            shards: (0..n).map(|_| Arc::default()).collect(),
        }
    }

    /// The shard connection `k` records into.
    pub fn for_connection(&self, k: usize) -> Arc<Mutex<Measured>> {
        self.shards[k % self.shards.len()].clone()
    }

    /// Everything measured, added up.
    pub fn total(&self) -> Measured {
        let mut total = Measured::default();
        for shard in &self.shards {
            let m = lock(shard);
            total.stats.merge(&m.stats);
            total.last = total.last.max(m.last);
        }
        total
    }
}

/// Locks a shard; a panic elsewhere does not lose the figures.
pub fn lock(shard: &Mutex<Measured>) -> MutexGuard<'_, Measured> {
    shard.lock().unwrap_or_else(|p| p.into_inner())
}

/// `h` in HdrHistogram's portable form: V2, deflated, base64.
pub fn encode(h: &Histogram<u64>) -> String {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .expect("a histogram serializes into memory");
    BASE64.encode(bytes)
}

/// A histogram written by [`encode`] (by this loadgen or another), as one of ours: values from
/// 1 µs to an hour. Malformed input, or values out of that range, is an error saying so.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|e| format!("the histogram is not base64 ({e})"))?;
    let read: Histogram<u64> = Deserializer::new()
        .deserialize(&mut &bytes[..])
        .map_err(|e| format!("the histogram cannot be read ({e})"))?;
    let mut ours = histogram();
    ours.add(&read)
        .map_err(|e| format!("the histogram holds values outside 1 µs to one hour ({e})"))?;
    Ok(ours)
}

/// The percentiles a report shows, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
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

    /// Latencies spread like real ones: most near 50 ms, a tail to seconds.
    fn synthetic(seed: u64, n: usize) -> Vec<u64> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                // xorshift: repeatable without a dependency.
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                match x % 100 {
                    0 => 1_000_000 + x % 2_000_000,
                    1..=9 => 60_000 + x % 200_000,
                    _ => 45_000 + x % 10_000,
                }
            })
            .collect()
    }

    #[test]
    fn merging_is_exact() {
        // Two shards' histograms added up hold exactly what one histogram of all their calls
        // holds: every count at every value, hence every percentile.
        let (a_values, b_values) = (synthetic(1, 20_000), synthetic(2, 5_000));
        let (mut a, mut b, mut all) = (histogram(), histogram(), histogram());
        for &v in &a_values {
            a.record(v).unwrap();
            all.record(v).unwrap();
        }
        for &v in &b_values {
            b.record(v).unwrap();
            all.record(v).unwrap();
        }
        a.add(&b).unwrap();
        assert_eq!(a, all);
        assert_eq!(a.len(), 25_000);
        for q in [0.5, 0.9, 0.99, 0.999, 0.9999, 1.0] {
            assert_eq!(a.value_at_quantile(q), all.value_at_quantile(q), "at {q}");
        }
    }

    #[test]
    fn the_portable_form_round_trips_exactly() {
        let mut stats = Stats::default();
        for v in synthetic(3, 10_000) {
            stats.record(Code::Ok, Duration::from_micros(v));
        }
        let text = encode(&stats.latency);
        let back = decode(&text).unwrap();
        assert_eq!(back, stats.latency);
        // Merged after the round trip, as `loadgen merge` does, still exact.
        let mut twice = decode(&text).unwrap();
        twice.add(&back).unwrap();
        assert_eq!(twice.len(), 20_000);
        assert_eq!(
            twice.value_at_quantile(0.99),
            stats.latency.value_at_quantile(0.99)
        );
    }

    #[test]
    fn a_damaged_histogram_is_an_error_not_a_panic() {
        assert!(decode("not base64!").unwrap_err().contains("not base64"));
        assert!(decode("aGVsbG8=").unwrap_err().contains("cannot be read"));
        let mut wide = Histogram::<u64>::new_with_bounds(1, u64::MAX / 4, 3).unwrap();
        wide.record(10_000_000_000_000).unwrap();
        assert!(decode(&encode(&wide)).unwrap_err().contains("outside"));
    }
}
