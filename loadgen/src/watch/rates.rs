//! The numbers of one snapshot, from two scrapes of an aggregator's `/metrics`: counters'
//! increases over the interval (a counter lower than before was reset by a restart and counts
//! from zero, as Prometheus' `increase` has it), rates, shares, and quantiles of the attempts
//! that ended in the interval from their histogram buckets' increases, interpolated within a
//! bucket as Prometheus' `histogram_quantile` does. Pure functions, tested on literal text.

use std::collections::HashMap;

use prometheus_parse::{HistogramCount, Labels};

use super::scrape::Scrape;

/// Each attempt at a backend, by `backend` and `rpc_grpc_status_code`.
const ATTEMPTS: &str = "rpc_client_call_duration_seconds";
/// Each call the aggregator answered, by `rpc_method` and `rpc_grpc_status_code`.
const SERVER_CALLS: &str = "rpc_server_call_duration_seconds_count";
/// The methods that are whole calls.
const CALL_METHODS: [&str; 2] = ["Aggregate", "AggregateStream"];

/// The whole aggregator over one interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// The interval, between the two scrapes.
    pub secs: f64,
    /// Aggregate and AggregateStream calls answered, per second.
    pub calls_per_sec: f64,
    /// Their share not OK; `None` when none were answered.
    pub error_rate: Option<f64>,
    /// Calls refused at the door.
    pub shed: f64,
    pub backends: Vec<BackendRow>,
}

/// One backend over the interval.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendRow {
    pub name: String,
    /// Attempts that ended, per second (all status codes).
    pub calls_per_sec: f64,
    /// Their share not OK; `None` when none ended.
    pub error_rate: Option<f64>,
    /// Their p50 and p99, in seconds; `None` when none ended.
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    /// The concurrency limit and calls holding a slot, at the second scrape.
    pub limit: Option<f64>,
    pub in_flight: Option<f64>,
    /// Calls refused at the door for this backend or at its limit.
    pub shed: f64,
    pub retries: f64,
    pub hedges: f64,
    /// Each endpoint's share of the backend's attempts; `None` when it had none.
    pub replicas: Vec<(String, Option<f64>)>,
}

/// What changed between `prev` and `now`, `secs` apart.
pub fn snapshot(prev: &Scrape, now: &Scrape, secs: f64) -> Snapshot {
    let secs = secs.max(1e-3);
    let call = |l: &Labels| {
        l.get("rpc_method")
            .is_some_and(|m| CALL_METHODS.contains(&m))
    };
    let calls = increase(prev, now, SERVER_CALLS, call);
    let failed = increase(prev, now, SERVER_CALLS, |l| call(l) && !ok(l));
    Snapshot {
        secs,
        calls_per_sec: calls / secs,
        error_rate: ratio(failed, calls),
        shed: increase(prev, now, "fanout_calls_shed_total", |_| true),
        backends: backend_names(now)
            .into_iter()
            .map(|name| backend(prev, now, secs, name))
            .collect(),
    }
}

fn backend(prev: &Scrape, now: &Scrape, secs: f64, name: String) -> BackendRow {
    let of = |l: &Labels| l.get("backend") == Some(name.as_str());
    let count = format!("{ATTEMPTS}_count");
    let attempts = increase(prev, now, &count, of);
    let failed = increase(prev, now, &count, |l| of(l) && !ok(l));
    let buckets = bucket_increase(prev, now, ATTEMPTS, of);
    let counter = |series: &str| increase(prev, now, series, of);
    let endpoints: Vec<(String, f64)> = now
        .scalars("fanout_endpoint_attempts_total")
        .filter(|(l, _)| of(l))
        .filter_map(|(l, _)| l.get("endpoint").map(str::to_owned))
        .map(|e| {
            let at = |l: &Labels| of(l) && l.get("endpoint") == Some(e.as_str());
            let n = increase(prev, now, "fanout_endpoint_attempts_total", at);
            (e, n)
        })
        .collect();
    BackendRow {
        calls_per_sec: attempts / secs,
        error_rate: ratio(failed, attempts),
        p50: quantile(0.5, &buckets),
        p99: quantile(0.99, &buckets),
        limit: gauge(now, "fanout_backend_concurrency_limit", of),
        in_flight: gauge(now, "fanout_backend_in_flight_calls", of),
        shed: counter("fanout_backend_door_refused_total")
            + counter("fanout_backend_limit_refused_total"),
        retries: counter("fanout_backend_retries_total"),
        hedges: counter("fanout_backend_hedges_total"),
        replicas: shares(&endpoints),
        name,
    }
}

/// The backends, in the aggregator's order, then any only the attempt histogram names.
fn backend_names(now: &Scrape) -> Vec<String> {
    let counted = now.scalars("fanout_backend_attempts_total").map(|x| x.0);
    let timed = now.histograms(ATTEMPTS).map(|x| x.0);
    let mut names: Vec<String> = Vec::new();
    for labels in counted.chain(timed) {
        if let Some(b) = labels.get("backend")
            && !names.iter().any(|n| n == b)
        {
            names.push(b.to_owned());
        }
    }
    names
}

fn ok(l: &Labels) -> bool {
    l.get("rpc_grpc_status_code") == Some("0")
}

/// `part / whole`, or `None` when there is no whole.
pub fn ratio(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole)
}

/// A counter's increase from `before` (`None`: the series is new) to `now`.
pub fn counter_increase(before: Option<f64>, now: f64) -> f64 {
    match before {
        Some(b) if now >= b => now - b,
        _ => now,
    }
}

/// The increase of the series called `name` whose labels `keep` takes, added up.
fn increase(prev: &Scrape, now: &Scrape, name: &str, keep: impl Fn(&Labels) -> bool) -> f64 {
    let before: HashMap<String, f64> = prev
        .scalars(name)
        .filter(|(l, _)| keep(l))
        .map(|(l, v)| (l.to_string(), v))
        .collect();
    now.scalars(name)
        .filter(|(l, _)| keep(l))
        .map(|(l, v)| counter_increase(before.get(&l.to_string()).copied(), v))
        // Not `sum()`: that of nothing is -0.0, shown as `-0.0%`.
        .fold(0.0, |total, x| total + x)
}

/// The gauges called `name` whose labels `keep` takes, added up; `None` when there are none.
fn gauge(now: &Scrape, name: &str, keep: impl Fn(&Labels) -> bool) -> Option<f64> {
    let mut values = now.scalars(name).filter(|(l, _)| keep(l)).map(|x| x.1);
    let first = values.next()?;
    Some(values.fold(first, |total, x| total + x))
}

/// The increase of every bucket of the histograms called `name` whose labels `keep` takes,
/// added up by upper bound: cumulative `(upper bound, count)`, sorted by bound.
fn bucket_increase(
    prev: &Scrape,
    now: &Scrape,
    name: &str,
    keep: impl Fn(&Labels) -> bool,
) -> Vec<(f64, f64)> {
    let before: HashMap<String, &[HistogramCount]> = prev
        .histograms(name)
        .filter(|(l, _)| keep(l))
        .map(|(l, b)| (l.to_string(), b))
        .collect();
    let total = |b: &[HistogramCount]| b.iter().map(|c| c.count).fold(0.0, f64::max);
    let mut merged: Vec<(f64, f64)> = Vec::new();
    for (labels, buckets) in now.histograms(name).filter(|(l, _)| keep(l)) {
        // A histogram with fewer observations than before was reset: all of it is new.
        let old = before
            .get(&labels.to_string())
            .filter(|old| total(old) <= total(buckets));
        for b in buckets {
            let was = old.and_then(|o| o.iter().find(|c| c.less_than == b.less_than));
            let added = counter_increase(was.map(|c| c.count), b.count);
            match merged.iter_mut().find(|(le, _)| *le == b.less_than) {
                Some((_, n)) => *n += added,
                None => merged.push((b.less_than, added)),
            }
        }
    }
    merged.sort_by(|a, b| a.0.total_cmp(&b.0));
    merged
}

/// The `q` quantile of cumulative buckets `(upper bound, count)` sorted by bound, the last
/// `+Inf`, as Prometheus' `histogram_quantile`: linear within the bucket the rank falls in (from
/// 0 in the first), the highest finite bound when it falls in `+Inf`. `None` without
/// observations.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let (&(last, _), _) = buckets.split_last()?;
    if last != f64::INFINITY || buckets.len() < 2 {
        return None;
    }
    // Counts that went down between buckets (scrapes racing observations) are evened out.
    let counts: Vec<f64> = buckets
        .iter()
        .scan(0.0, |max: &mut f64, &(_, c)| {
            *max = max.max(c);
            Some(*max)
        })
        .collect();
    let total = counts[counts.len() - 1];
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let b = (0..buckets.len() - 1)
        .find(|&i| counts[i] >= rank)
        .unwrap_or(buckets.len() - 1);
    if b == buckets.len() - 1 {
        return Some(buckets[b - 1].0);
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return Some(buckets[0].0);
    }
    let (start, below) = match b {
        0 => (0.0, 0.0),
        _ => (buckets[b - 1].0, counts[b - 1]),
    };
    let end = buckets[b].0;
    Some(start + (end - start) * (rank - below) / (counts[b] - below))
}

/// Each endpoint's share of the attempts; `None` for all when there were none.
pub fn shares(attempts: &[(String, f64)]) -> Vec<(String, Option<f64>)> {
    let all = attempts.iter().fold(0.0, |total, x| total + x.1);
    attempts
        .iter()
        .map(|(e, n)| (e.clone(), ratio(*n, all)))
        .collect()
}

#[cfg(test)]
mod tests;
