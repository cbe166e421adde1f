//! The `fanout.v1.Aggregator` service: admit a call, run its plan, answer all at once
//! (`Aggregate`) or as results arrive (`AggregateStream`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use fanout_proto::v1::aggregator_server::Aggregator;
use fanout_proto::v1::{
    AggregateEvent, AggregateReply, AggregateRequest, BackendLimitStats, ClearCacheReply,
    ClearCacheRequest, EndpointStats, ServerStats, StatsRequest, aggregate_event::Event,
};
use fanout_server::deadline::grpc_timeout;
use fanout_server::{CallGuard, Counters};
use fanout_tls::ClientTls;
use futures::stream::{self, BoxStream, StreamExt};
use tonic::{Request, Response, Status};

use crate::Config;
use crate::admission::{Admission, Gate, Refused, Ticket};
use crate::backends::Backends;
use crate::client::cache::Cache;
use crate::client::limit::Reservation;
use crate::client::{ReplyCache, StackCounters};
use crate::error::RequestError;
use crate::fanout::{Gather, Tally};
use crate::metrics;
use crate::request::{self, Plan};
use fanout_server::metrics::Registry;

/// The aggregator service. Must be created inside a tokio runtime (it opens the channels).
#[derive(Debug)]
pub struct AggregatorService {
    config: Config,
    gather: Gather,
    /// `--max-in-flight`: a call that finds no place is shed at once.
    gate: Gate,
    cache: Option<ReplyCache>,
    counters: Arc<Counters>,
    /// Calls refused at the door (shared with the metrics).
    shed: Arc<AtomicU64>,
    /// When the last "shedding" warning was logged (ms since the epoch), to log at most one a
    /// second under overload.
    last_shed_warning: AtomicU64,
}

/// An admitted call: its plan, and what it holds until it ends.
struct Admitted {
    plan: Arc<Plan>,
    guard: CallGuard,
    /// One per target, each handed to that backend's part (see `admission`).
    reservations: Vec<Option<Reservation>>,
    _ticket: Ticket,
}

impl AggregatorService {
    /// Calls `https://` backends with `backend_tls`; with a `registry`, registers the
    /// aggregator's series there (see [`crate::metrics`]).
    pub fn new(
        config: Config,
        counters: Arc<Counters>,
        backend_tls: ClientTls,
        registry: Option<&mut Registry>,
    ) -> Self {
        let cache = Cache::new(config.cache_ttl);
        let shed = Arc::new(AtomicU64::new(0));
        let backends = match registry {
            None => Arc::new(Backends::connect(
                &config,
                cache.clone(),
                &backend_tls,
                None,
            )),
            Some(registry) => {
                let durations = metrics::attempt_durations(registry);
                let backends = Arc::new(Backends::connect(
                    &config,
                    cache.clone(),
                    &backend_tls,
                    Some(&durations),
                ));
                registry.register_collector(Box::new(metrics::Scraped {
                    backends: backends.clone(),
                    shed: shed.clone(),
                }));
                backends
            }
        };
        Self {
            gate: Gate::new(config.max_in_flight),
            gather: Gather::new(backends),
            cache,
            counters,
            shed,
            config,
            last_shed_warning: AtomicU64::new(0),
        }
    }

    /// Checks the request, then takes an in-flight permit or sheds the call.
    /// Refused calls count as served and failed, but never as in flight: `in_flight` and
    /// `max_in_flight` are admitted calls only, so they never exceed `--max-in-flight`.
    fn admit(&self, req: &Request<AggregateRequest>) -> Result<Admitted, Status> {
        let admitted = request::plan(
            &self.config,
            self.gather.backends(),
            req.get_ref(),
            grpc_timeout(req),
        )
        .and_then(|plan| {
            let ticket = self
                .gate
                .enter(self.gather.backends(), &plan.targets)
                .map_err(|refused| {
                    self.note_shed(&refused);
                    match refused {
                        Refused::Full { limit } => RequestError::Full {
                            limit,
                            auto: self.config.max_in_flight == Admission::Auto,
                        },
                        Refused::Overloaded { backend, limit } => {
                            RequestError::Overloaded { backend, limit }
                        }
                    }
                })?;
            Ok((plan, ticket))
        });
        match admitted {
            Ok((plan, mut ticket)) => Ok(Admitted {
                plan: Arc::new(plan),
                guard: self.counters.start_call(),
                reservations: std::mem::take(&mut ticket.reservations),
                _ticket: ticket,
            }),
            Err(e) => {
                Counters::bump(&self.counters.served);
                Counters::bump(&self.counters.failed);
                Err(e.into())
            }
        }
    }

    fn note_shed(&self, refused: &Refused) {
        Counters::bump(&self.shed);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let last = self.last_shed_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= 1000
            && self
                .last_shed_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let shed_total = self.shed.load(Ordering::Relaxed);
            match refused {
                Refused::Full { limit } => tracing::warn!(
                    shed_total,
                    max_in_flight = limit,
                    "shedding calls: at the --max-in-flight limit"
                ),
                Refused::Overloaded { backend, limit } => tracing::warn!(
                    shed_total,
                    backend,
                    limit,
                    "shedding calls: a backend they need is overloaded"
                ),
            }
        }
    }
}

/// The state of one `AggregateStream` call between events.
struct Streaming {
    results: BoxStream<'static, fanout_proto::v1::BackendResult>,
    tally: Tally,
    call: Admitted,
}

#[tonic::async_trait]
impl Aggregator for AggregatorService {
    async fn aggregate(
        &self,
        req: Request<AggregateRequest>,
    ) -> Result<Response<AggregateReply>, Status> {
        let mut call = self.admit(&req)?;
        let reservations = std::mem::take(&mut call.reservations);
        let mut results = self.gather.results(call.plan.clone(), reservations);
        let mut tally = Tally::default();
        let mut all = Vec::with_capacity(call.plan.targets.len());
        while let Some(r) = results.next().await {
            tally.add(&r);
            all.push(r);
        }
        let summary = tally.finish(&call.plan);
        tracing::debug!(?summary, "aggregate done");
        call.guard.finish(true);
        Ok(Response::new(AggregateReply {
            results: all,
            summary: Some(summary),
        }))
    }

    type AggregateStreamStream = BoxStream<'static, Result<AggregateEvent, Status>>;

    async fn aggregate_stream(
        &self,
        req: Request<AggregateRequest>,
    ) -> Result<Response<Self::AggregateStreamStream>, Status> {
        let mut call = self.admit(&req)?;
        let reservations = std::mem::take(&mut call.reservations);
        let state = Streaming {
            results: self.gather.results(call.plan.clone(), reservations),
            tally: Tally::default(),
            call,
        };
        // The stream owns the call: if the client goes away, tonic drops the stream, and with it
        // the outstanding backend calls, the in-flight permit and the guard (counted cancelled).
        let events = stream::unfold(Some(state), |state| async move {
            let mut s = state?;
            match s.results.next().await {
                Some(r) => {
                    s.tally.add(&r);
                    Some((Ok(event(Event::Result(r))), Some(s)))
                }
                None => {
                    let summary = s.tally.finish(&s.call.plan);
                    s.call.guard.finish(true);
                    Some((Ok(event(Event::Summary(summary))), None))
                }
            }
        });
        Ok(Response::new(events.boxed()))
    }

    async fn clear_cache(
        &self,
        _: Request<ClearCacheRequest>,
    ) -> Result<Response<ClearCacheReply>, Status> {
        let cleared = self.cache.as_ref().map_or(0, Cache::clear);
        tracing::info!(cleared, "cache cleared");
        Ok(Response::new(ClearCacheReply { cleared }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<ServerStats>, Status> {
        let mut stats = self.counters.snapshot("aggregator");
        stats.shed = self.shed.load(Ordering::Relaxed);
        let sum = |count: fn(&StackCounters) -> &AtomicU64| {
            let backends = self.gather.backends().iter();
            backends
                .map(|b| count(b.counters()).load(Ordering::Relaxed))
                .sum()
        };
        stats.backend_attempts = sum(|c| &c.attempts);
        stats.retries = sum(|c| &c.retries);
        stats.retries_throttled = sum(|c| &c.retries_throttled);
        stats.cache_hits = sum(|c| &c.cache_hits);
        stats.hedges = sum(|c| &c.hedges);
        stats.hedges_won = sum(|c| &c.hedges_won);
        stats.hedges_refused = sum(|c| &c.hedges_refused);
        stats.backends = self
            .gather
            .backends()
            .iter()
            .map(|b| {
                let l = b.limiter();
                BackendLimitStats {
                    backend: b.name.clone(),
                    limit: l.limit() as u64,
                    adaptive: l.is_adaptive(),
                    in_flight: l.in_flight.load(Ordering::Relaxed),
                    queued: l.queued.load(Ordering::Relaxed),
                    over_limit: l.over_limit.load(Ordering::Relaxed),
                    overloaded: l.is_overloaded(),
                    no_load_ms: l.no_load().map_or(0.0, |d| d.as_secs_f64() * 1e3),
                    refused_at_door: l.door_refusals.load(Ordering::Relaxed),
                }
            })
            .collect();
        let now = tokio::time::Instant::now();
        stats.endpoints = self
            .gather
            .backends()
            .iter()
            .flat_map(|b| {
                b.replicas()
                    .current()
                    .iter()
                    .map(|r| EndpointStats {
                        backend: b.name.clone(),
                        address: r.addr.clone(),
                        in_flight: r.in_flight.load(Ordering::Relaxed),
                        served: r.served.load(Ordering::Relaxed),
                        failed: r.failed.load(Ordering::Relaxed),
                        ejected: r.ejected(now),
                        ejections: r.ejections(),
                        down: r.is_down(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        Ok(Response::new(stats))
    }
}

fn event(e: Event) -> AggregateEvent {
    AggregateEvent { event: Some(e) }
}
