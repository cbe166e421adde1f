//! The aggregator's series (docs/metrics.md). Per call only the attempt histogram is recorded
//! (in [`client::attempt`](crate::client::attempt)); everything else is read at scrape time from
//! the counters and gauges `Stats` reports, by [`Scraped`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fanout_server::metrics::{Durations, Registry, counter, counters, gauges};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;

use crate::backends::{Backend, Backends};
use crate::client::StackCounters;

/// Registers `rpc_client_call_duration_seconds`, which each backend's stack records into.
pub fn attempt_durations(registry: &mut Registry) -> Durations {
    Durations::register(
        registry,
        "rpc_client_call_duration",
        "Duration of each attempt at a backend (first tries, retries, hedges), from its start \
         (the wait for a slot included) to its answer",
    )
}

/// What the aggregator already counts, read when Prometheus scrapes.
#[derive(Debug)]
pub struct Scraped {
    pub backends: Arc<Backends>,
    /// Calls refused at the door.
    pub shed: Arc<AtomicU64>,
}

type Row<'a> = ([(&'static str, &'a str); 1], u64);
/// A per-backend counter: its name, help, and where it is kept.
type StackCounter = (&'static str, &'static str, fn(&StackCounters) -> &AtomicU64);
type EndpointRow<'a> = ([(&'static str, &'a str); 2], u64);

impl Scraped {
    fn per_backend<'a>(
        &'a self,
        value: impl Fn(&'a Backend) -> u64,
    ) -> impl Iterator<Item = Row<'a>> {
        self.backends
            .iter()
            .map(move |b| ([("backend", &*b.name)], value(b)))
    }

    fn per_counter<'a>(
        &'a self,
        count: fn(&StackCounters) -> &AtomicU64,
    ) -> impl Iterator<Item = Row<'a>> {
        self.per_backend(move |b| count(b.counters()).load(Relaxed))
    }
}

impl Collector for Scraped {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        counter(
            &mut e,
            "fanout_calls_shed",
            "Calls refused at the door (--max-in-flight, or a backend they need overloaded)",
            self.shed.load(Relaxed),
        )?;
        let stack: [StackCounter; 8] = [
            ("fanout_backend_attempts", "Attempts made", |c| &c.attempts),
            ("fanout_backend_retries", "Retries made", |c| &c.retries),
            (
                "fanout_backend_retries_refused",
                "Retries the retry budget refused",
                |c| &c.retries_throttled,
            ),
            ("fanout_backend_hedges", "Hedges sent", |c| &c.hedges),
            (
                "fanout_backend_hedges_won",
                "Hedges that answered first",
                |c| &c.hedges_won,
            ),
            (
                "fanout_backend_hedges_refused",
                "Hedges the hedge budget refused",
                |c| &c.hedges_refused,
            ),
            (
                "fanout_backend_cache_hits",
                "Replies served from the cache",
                |c| &c.cache_hits,
            ),
            (
                "fanout_backend_cache_misses",
                "Cache lookups that found nothing",
                |c| &c.cache_misses,
            ),
        ];
        for (name, help, count) in stack {
            counters(&mut e, name, help, self.per_counter(count))?;
        }
        let mut results = e.encode_descriptor(
            "fanout_backend_results",
            "The backend's parts of calls, by the gRPC status each ended with (after retries and \
             hedges)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for b in self.backends.iter() {
            for (code, n) in b.counters().results.iter().enumerate() {
                let n = n.load(Relaxed);
                if n > 0 {
                    let code = code.to_string();
                    let labels = [("backend", &*b.name), ("rpc_grpc_status_code", &*code)];
                    ConstCounter::new(n).encode(results.encode_family(&labels)?)?;
                }
            }
        }
        let limiter = |b: &Backend| b.limiter().clone();
        gauges(
            &mut e,
            "fanout_backend_in_flight_calls",
            "Calls holding one of the backend's slots",
            self.per_backend(|b| limiter(b).in_flight.load(Relaxed)),
        )?;
        gauges(
            &mut e,
            "fanout_backend_concurrency_limit",
            "The backend's concurrency limit now",
            self.per_backend(|b| limiter(b).limit() as u64),
        )?;
        gauges(
            &mut e,
            "fanout_backend_queued_calls",
            "Calls waiting for one of the backend's slots",
            self.per_backend(|b| limiter(b).queued.load(Relaxed)),
        )?;
        counters(
            &mut e,
            "fanout_backend_limit_refused",
            "Calls refused at the backend's limit (no slot in time)",
            self.per_backend(|b| limiter(b).over_limit.load(Relaxed)),
        )?;
        gauges(
            &mut e,
            "fanout_backend_overloaded",
            "1 while the adaptive limit holds the backend overloaded",
            self.per_backend(|b| u64::from(limiter(b).is_overloaded())),
        )?;
        counters(
            &mut e,
            "fanout_backend_door_refused",
            "Calls refused at the door because this backend is overloaded",
            self.per_backend(|b| limiter(b).door_refusals.load(Relaxed)),
        )?;
        self.endpoints(&mut e)
    }
}

impl Scraped {
    fn endpoints(&self, e: &mut DescriptorEncoder) -> std::fmt::Result {
        let now = tokio::time::Instant::now();
        let replicas: Vec<_> = self
            .backends
            .iter()
            .map(|b| (b, b.replicas().current()))
            .collect();
        let rows = |value: &dyn Fn(&crate::client::replicas::Replica) -> u64| {
            let mut out: Vec<EndpointRow<'_>> = Vec::new();
            for (b, set) in &replicas {
                for r in set.iter() {
                    out.push(([("backend", &*b.name), ("endpoint", &*r.addr)], value(r)));
                }
            }
            out
        };
        gauges(
            e,
            "fanout_endpoint_in_flight_calls",
            "Attempts in flight to the endpoint",
            rows(&|r| r.in_flight.load(Relaxed)),
        )?;
        counters(
            e,
            "fanout_endpoint_attempts",
            "Attempts the endpoint answered or failed",
            rows(&|r| r.served.load(Relaxed) + r.failed.load(Relaxed)),
        )?;
        counters(
            e,
            "fanout_endpoint_failures",
            "Attempts at the endpoint that failed",
            rows(&|r| r.failed.load(Relaxed)),
        )?;
        gauges(
            e,
            "fanout_endpoint_ejected",
            "1 while the endpoint is ejected (outlier detection)",
            rows(&|r| u64::from(r.ejected(now))),
        )?;
        counters(
            e,
            "fanout_endpoint_ejections",
            "Times the endpoint was ejected",
            rows(&|r| u64::from(r.ejections())),
        )?;
        gauges(
            e,
            "fanout_endpoint_down",
            "1 while the endpoint is known down or silent",
            rows(&|r| u64::from(r.is_down())),
        )?;
        counters(
            e,
            "fanout_endpoint_down_verdicts",
            "Times the endpoint was found unreachable or silent",
            rows(&|r| u64::from(r.down_verdicts.load(Relaxed))),
        )
    }
}
