//! A backend's replicas: the set of endpoints one backend name stands for, kept up to date from
//! DNS, and the health of each as outlier ejection judges it.
//!
//! - **Where they come from.** Every `--backend NAME=URL` with the same name adds its URL. A URL
//!   whose host is an IP address is one endpoint; one whose host is a name is one endpoint per
//!   address the name resolves to (a Kubernetes headless Service, `docker compose --scale`),
//!   resolved again every `--resolve-interval`: addresses that appear are added, addresses that
//!   vanish leave the set (calls in flight on them finish). A failed resolution keeps the last
//!   good addresses, and is logged.
//! - **Outlier ejection**, Envoy's consecutive-errors detector: after `--eject-after` connection
//!   failures or UNAVAILABLE answers in a row, an endpoint leaves the rotation for
//!   `--eject-time`, longer each time it is ejected again, never with more than half of the set
//!   ejected at once; it comes back by itself when its time is up.
//! - **Silence**: an endpoint whose calls time out again and again without an answer
//!   (stopped, paused) takes one call at a time until it answers (see [`super::silence`]),
//!   and the other endpoints are preferred meanwhile.
//!
//! The set is shared by every runtime that calls the backend; each runtime keeps its own
//! channels to the endpoints (see [`super::balance`]).

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use fanout_tls::ClientTls;
use futures::future::BoxFuture;

use super::silence::Silence;
use tokio::sync::watch;
use tokio::time::Instant;

use super::fetch::Keepalive;

/// Finds the addresses of a host name. [`Dns`] asks the system's resolver; tests inject their
/// own.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (`getaddrinfo`, through tokio's blocking pool): `/etc/hosts`, DNS,
/// Docker's and Kubernetes' name servers alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dns;

impl Resolve for Dns {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// The resolver a config uses; [`Dns`] unless a test says otherwise.
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl Default for Resolver {
    fn default() -> Self {
        Resolver(Arc::new(Dns))
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

/// How replicas are found and judged; plain data from the flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReplicaPolicy {
    /// How often host names are resolved again.
    pub resolve_interval: Duration,
    /// Connection failures or UNAVAILABLE answers in a row that eject an endpoint.
    pub eject_after: u32,
    /// How long a first ejection lasts; the n-th lasts n times as long...
    pub eject_time: Duration,
    /// ...but never longer than this.
    pub max_eject_time: Duration,
}

impl Default for ReplicaPolicy {
    fn default() -> Self {
        ReplicaPolicy {
            resolve_interval: Duration::from_secs(5),
            eject_after: 5,
            eject_time: Duration::from_secs(10),
            max_eject_time: Duration::from_secs(300),
        }
    }
}

/// One endpoint of a backend, and what is known of its health.
#[derive(Debug)]
pub struct Replica {
    /// Unique in the process: a replica that leaves and comes back is a new one.
    pub id: u64,
    /// `ip:port` (or `host:port` for a name not resolved by us), as it is shown.
    pub addr: String,
    /// What to connect to, `http://ip:port` or `https://ip:port`.
    pub url: String,
    /// The URL as configured, when it named a host: requests still carry that host.
    pub origin: Option<String>,
    pub in_flight: AtomicU64,
    pub served: AtomicU64,
    pub failed: AtomicU64,
    /// Connection failures and UNAVAILABLE answers since the last success.
    consecutive: AtomicU32,
    ejection: Mutex<Ejection>,
    /// Its answer time, peak-EWMA (see [`Rtt`]).
    rtt: Mutex<Rtt>,
    /// Calls timed out without an answer since the last one.
    pub silence: Silence,
}

/// An endpoint's answer time as the balancer weighs it: peak-EWMA, as Finagle, linkerd and
/// tower's `PeakEwma` keep it. A slower answer than the estimate is taken at once (a replica that
/// turns slow is avoided at once); a faster one moves the estimate by how long it has been since
/// the last (smoothing, over about [`RTT_DECAY`]); and with no answers the estimate decays toward
/// zero, so an endpoint avoided for being slow is tried again now and then, and found recovered.
#[derive(Debug)]
struct Rtt {
    nanos: f64,
    at: Instant,
}

/// How fast an endpoint's answer-time estimate forgets.
const RTT_DECAY: Duration = Duration::from_secs(10);
/// A new endpoint's estimate until it answers: low, so it is tried soon.
const RTT_START: Duration = Duration::from_millis(1);

impl Rtt {
    fn new(now: Instant) -> Self {
        Rtt {
            nanos: RTT_START.as_nanos() as f64,
            at: now,
        }
    }

    fn decay(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_nanos() as f64;
        (-elapsed / RTT_DECAY.as_nanos() as f64).exp()
    }

    /// The estimate at `now`.
    fn estimate(&self, now: Instant) -> f64 {
        self.nanos * self.decay(now)
    }

    fn observe(&mut self, took: Duration, now: Instant) {
        let took = took.as_nanos() as f64;
        let current = self.estimate(now);
        self.nanos = if took > current {
            took
        } else {
            let decay = self.decay(now);
            current * decay + took * (1.0 - decay)
        };
        self.at = now;
    }
}

#[derive(Debug, Default)]
struct Ejection {
    /// Out of the rotation until then.
    until: Option<Instant>,
    /// Times ejected so far.
    times: u32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Replica {
    fn new(scheme: &str, addr: SocketAddr, origin: Option<String>) -> Self {
        Replica {
            id: NEXT_ID.fetch_add(1, Relaxed),
            addr: addr.to_string(),
            url: format!("{scheme}://{addr}"),
            origin,
            in_flight: AtomicU64::new(0),
            served: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            consecutive: AtomicU32::new(0),
            ejection: Mutex::new(Ejection::default()),
            rtt: Mutex::new(Rtt::new(Instant::now())),
            silence: Silence::default(),
        }
    }

    /// What calling it costs now: its answer-time estimate times the calls it would then have.
    fn cost(&self, now: Instant) -> f64 {
        let rtt = self
            .rtt
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .estimate(now);
        rtt * (self.in_flight.load(Relaxed) + 1) as f64
    }

    /// Whether it is out of the rotation at `now`.
    pub fn ejected(&self, now: Instant) -> bool {
        self.lock().until.is_some_and(|until| until > now)
    }

    /// Times it was ejected so far.
    pub fn ejections(&self) -> u32 {
        self.lock().times
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one call to a replica came to, as ejection and silence count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An answer (an error status from the backend's own code included): the replica is up.
    Answered,
    /// No connection or a broken one (`connection`), or an UNAVAILABLE answer: counts toward
    /// ejection.
    Unreachable { connection: bool },
    /// Given up on for want of an answer (its time ran out): counts toward silence.
    GivenUp,
    /// Neither (the caller went away before the call's time was up): says nothing either way.
    Unknown,
}

/// The replicas of one backend.
pub struct Replicas {
    backend: Arc<str>,
    policy: ReplicaPolicy,
    /// For the channels of health probes.
    keepalive: Keepalive,
    tls: ClientTls,
    set: watch::Sender<Arc<[Arc<Replica>]>>,
    /// Whether the names have been resolved once (until then an empty set means "wait").
    resolved: watch::Sender<bool>,
    /// The last resolution error, for the message of a call that finds no endpoint.
    last_error: Mutex<Option<String>>,
    /// Serializes ejections, so "at most half" holds.
    ejecting: Mutex<()>,
}

impl fmt::Debug for Replicas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replicas")
            .field("backend", &self.backend)
            .field("set", &*self.set.borrow())
            .finish()
    }
}

/// A configured URL: an address to use as it is, or a name to resolve; either way with the
/// URL's scheme (`http` or `https`).
#[derive(Debug, Clone)]
enum Source {
    Fixed(&'static str, SocketAddr),
    Named(Name),
}

/// A host name to resolve, from a configured URL.
#[derive(Debug, Clone)]
struct Name {
    scheme: &'static str,
    host: String,
    port: u16,
    /// The URL as configured: its endpoints' origin.
    url: String,
}

impl Source {
    /// `url` was checked by `BackendSpec`: `http://host:port` or `https://host:port`.
    fn of(url: &str) -> Source {
        let uri: http::Uri = url.parse().expect("a URL BackendSpec checked");
        let scheme = if uri.scheme_str() == Some("https") {
            "https"
        } else {
            "http"
        };
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => Source::Fixed(scheme, SocketAddr::new(ip, port)),
            Err(_) => Source::Named(Name {
                scheme,
                host: bare.to_owned(),
                port,
                url: url.to_owned(),
            }),
        }
    }
}

impl Replicas {
    /// The replicas behind `urls`, resolved now and every `policy.resolve_interval` by a task
    /// on the current runtime, which ends when the returned set is dropped.
    pub fn start(
        backend: Arc<str>,
        urls: &[String],
        policy: ReplicaPolicy,
        keepalive: Keepalive,
        tls: ClientTls,
        resolver: Resolver,
    ) -> Arc<Replicas> {
        let sources: Vec<Source> = urls.iter().map(|u| Source::of(u)).collect();
        let mut fixed: Vec<Arc<Replica>> = Vec::new();
        for s in &sources {
            if let Source::Fixed(scheme, addr) = s
                && !fixed.iter().any(|r| r.addr == addr.to_string())
            {
                fixed.push(Arc::new(Replica::new(scheme, *addr, None)));
            }
        }
        let named: Vec<Name> = sources
            .into_iter()
            .filter_map(|s| match s {
                Source::Named(name) => Some(name),
                Source::Fixed(..) => None,
            })
            .collect();
        let replicas = Arc::new(Replicas {
            backend,
            policy,
            keepalive,
            tls,
            set: watch::Sender::new(fixed.into()),
            resolved: watch::Sender::new(named.is_empty()),
            last_error: Mutex::new(None),
            ejecting: Mutex::new(()),
        });
        for r in replicas.set.borrow().iter() {
            tracing::info!(
                backend = &*replicas.backend,
                endpoint = r.addr,
                "endpoint added"
            );
        }
        if !named.is_empty() {
            tokio::spawn(resolve_forever(
                Arc::downgrade(&replicas),
                named,
                resolver.0,
            ));
        }
        replicas
    }

    pub fn backend(&self) -> &Arc<str> {
        &self.backend
    }

    /// The endpoints now.
    pub fn current(&self) -> Arc<[Arc<Replica>]> {
        self.set.borrow().clone()
    }

    /// Waits until the names have been resolved once (at start-up, before the first answer).
    pub async fn resolved(&self) {
        let mut rx = self.resolved.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Why there is no endpoint to call.
    pub fn no_endpoint(&self) -> String {
        match &*self.last_error.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => format!("no endpoint: {e}"),
            None => "no endpoint".to_owned(),
        }
    }

    /// Power of two choices: of the endpoints in rotation, preferring those that answer and
    /// those this call has not tried yet, two at random, and of those the cheaper: answer time
    /// (peak-EWMA) times the calls it would then have in flight.
    pub fn pick(&self, tried: &[u64]) -> Option<Arc<Replica>> {
        let set = self.current();
        let now = Instant::now();
        let mut in_rotation: Vec<&Arc<Replica>> = set
            .iter()
            .filter(|r| !self.returned_or_out(r, now))
            .collect();
        if in_rotation.iter().any(|r| !r.silence.is_silent()) {
            in_rotation.retain(|r| !r.silence.is_silent());
        }
        let untried: Vec<&Arc<Replica>> = in_rotation
            .iter()
            .copied()
            .filter(|r| !tried.contains(&r.id))
            .collect();
        let pool = if !untried.is_empty() {
            untried
        } else if !in_rotation.is_empty() {
            in_rotation
        } else {
            // Every endpoint ejected cannot happen (at most half are), but a set of one whose
            // only endpoint is out still gets called: better a likely failure than none tried.
            set.iter().collect()
        };
        use rand::Rng;
        let mut rng = rand::rng();
        match pool.len() {
            0 => None,
            1 => Some(pool[0].clone()),
            n => {
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (a, b) = (pool[a], pool[b]);
                let pick = if a.cost(now) <= b.cost(now) { a } else { b };
                Some(pick.clone())
            }
        }
    }

    /// Whether `r` is out of the rotation; notes (and logs) an ejection that has run out.
    fn returned_or_out(&self, r: &Replica, now: Instant) -> bool {
        let mut e = r.lock();
        match e.until {
            Some(until) if until > now => true,
            Some(_) => {
                e.until = None;
                tracing::info!(
                    backend = &*self.backend,
                    endpoint = r.addr,
                    "endpoint returns to the rotation"
                );
                false
            }
            None => false,
        }
    }

    /// Counts one call's outcome at `r` (which took `took`), ejecting it when it has failed too
    /// often in a row.
    pub fn record(self: &Arc<Self>, r: &Arc<Replica>, verdict: Verdict, took: Duration) {
        let now = Instant::now();
        match verdict {
            Verdict::Answered => {
                r.served.fetch_add(1, Relaxed);
                r.consecutive.store(0, Relaxed);
                r.rtt
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .observe(took, now);
                if r.silence.answered() {
                    tracing::info!(
                        backend = &*self.backend,
                        endpoint = r.addr,
                        "endpoint answers again: calls go to it as before"
                    );
                }
            }
            Verdict::Unreachable { connection } => {
                // No answer time to learn from: ejection deals with an endpoint that fails.
                r.failed.fetch_add(1, Relaxed);
                let n = r.consecutive.fetch_add(1, Relaxed) + 1;
                if n >= self.policy.eject_after && self.eject(r) && connection {
                    // Out for want of a connection: find out as soon as it takes them again.
                    tokio::spawn(probe(Arc::downgrade(self), r.clone()));
                }
            }
            Verdict::Unknown => {
                r.failed.fetch_add(1, Relaxed);
            }
            Verdict::GivenUp => {
                r.failed.fetch_add(1, Relaxed);
                if r.silence.given_up() {
                    tracing::warn!(
                        backend = &*self.backend,
                        endpoint = r.addr,
                        in_a_row = super::silence::SILENT_AFTER,
                        "endpoint silent: calls timed out in a row without an answer; one call \
                         at a time goes to it until it answers"
                    );
                }
            }
        }
    }

    /// Takes `r` out of the rotation, unless half the set would then be out; says whether it
    /// did.
    fn eject(&self, r: &Replica) -> bool {
        let _one_at_a_time = self.ejecting.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        if r.ejected(now) {
            return false;
        }
        let set = self.current();
        let out = set.iter().filter(|o| o.ejected(now)).count();
        if (out + 1) * 2 > set.len() {
            tracing::debug!(
                backend = &*self.backend,
                endpoint = r.addr,
                out,
                of = set.len(),
                "not ejected: half of the endpoints would be out"
            );
            return false;
        }
        let mut e = r.lock();
        e.times += 1;
        let time = self
            .policy
            .eject_time
            .saturating_mul(e.times)
            .min(self.policy.max_eject_time);
        e.until = Some(now + time);
        r.consecutive.store(0, Relaxed);
        tracing::warn!(
            backend = &*self.backend,
            endpoint = r.addr,
            failures_in_a_row = self.policy.eject_after,
            for_how_long = ?time,
            times = e.times,
            "endpoint ejected"
        );
        true
    }

    /// Replaces the named part of the set with `found`: addresses, each with its scheme and
    /// origin (the fixed part stays).
    fn update(&self, found: Vec<(SocketAddr, &'static str, String)>) {
        let old = self.current();
        let by_addr: HashMap<&str, &Arc<Replica>> =
            old.iter().map(|r| (r.addr.as_str(), r)).collect();
        let mut next: Vec<Arc<Replica>> =
            old.iter().filter(|r| r.origin.is_none()).cloned().collect();
        for (addr, scheme, origin) in found {
            let key = addr.to_string();
            if next.iter().any(|r| r.addr == key) {
                continue;
            }
            match by_addr.get(key.as_str()) {
                Some(r) => next.push((*r).clone()),
                None => {
                    tracing::info!(backend = &*self.backend, endpoint = key, "endpoint added");
                    next.push(Arc::new(Replica::new(scheme, addr, Some(origin))));
                }
            }
        }
        for r in old.iter().filter(|r| !next.iter().any(|n| n.id == r.id)) {
            tracing::info!(
                backend = &*self.backend,
                endpoint = r.addr,
                in_flight = r.in_flight.load(Relaxed),
                "endpoint removed (calls in flight on it finish)"
            );
        }
        if next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| a.id != b.id) {
            self.set.send_replace(next.into());
        }
    }
}

/// Addresses in order, each once.
fn dedup(addrs: impl Iterator<Item = SocketAddr>) -> impl Iterator<Item = SocketAddr> {
    let mut seen = Vec::new();
    addrs.filter(move |a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    })
}

/// Resolves the names now and every interval, while the set lives.
async fn resolve_forever(replicas: Weak<Replicas>, names: Vec<Name>, resolver: Arc<dyn Resolve>) {
    // The last good addresses of each name.
    let mut known: Vec<Vec<SocketAddr>> = vec![Vec::new(); names.len()];
    loop {
        let Some(set) = replicas.upgrade() else {
            return;
        };
        let mut errors = Vec::new();
        for (i, Name { host, port, .. }) in names.iter().enumerate() {
            match resolver.resolve(host, *port).await {
                Ok(addrs) if !addrs.is_empty() => known[i] = dedup(addrs.into_iter()).collect(),
                Ok(_) => errors.push(format!("`{host}` resolved to no address")),
                Err(e) => errors.push(format!("`{host}` did not resolve: {e}")),
            }
        }
        for e in &errors {
            tracing::warn!(
                backend = &*set.backend,
                "{e}; keeping the last good addresses"
            );
        }
        *set.last_error.lock().unwrap_or_else(|p| p.into_inner()) = errors.into_iter().next();
        let found = names
            .iter()
            .zip(&known)
            .flat_map(|(name, addrs)| {
                addrs
                    .iter()
                    .map(move |a| (*a, name.scheme, name.url.clone()))
            })
            .collect();
        set.update(found);
        set.resolved.send_replace(true);
        let interval = set.policy.resolve_interval;
        drop(set);
        tokio::time::sleep(interval).await;
    }
}

/// How often an endpoint ejected for want of a connection is asked whether it is back.
const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// While `r` is ejected for want of a connection, asks it every [`PROBE_INTERVAL`] for its
/// `grpc.health.v1` status; the first SERVING brings it back before its ejection runs out, so a
/// restarted replica takes calls again within a fraction of a second rather than after
/// `--eject-time`. (Envoy pairs outlier ejection with active health checks the same way.) An
/// endpoint ejected for UNAVAILABLE answers is not probed: it is up, and says it is serving,
/// while failing calls; it waits out its time.
async fn probe(replicas: Weak<Replicas>, r: Arc<Replica>) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    loop {
        tokio::time::sleep(PROBE_INTERVAL).await;
        let Some(set) = replicas.upgrade() else {
            return;
        };
        let now = Instant::now();
        if !r.ejected(now) || !set.current().iter().any(|c| c.id == r.id) {
            return;
        }
        let Ok(channel) =
            super::fetch::channel(&r.url, r.origin.as_deref(), set.keepalive, &set.tls)
        else {
            return;
        };
        let mut client = HealthClient::new(channel);
        let check = client.check(HealthCheckRequest::default());
        let serving = matches!(
            tokio::time::timeout(PROBE_INTERVAL, check).await,
            Ok(Ok(answer)) if answer.get_ref().status() == ServingStatus::Serving
        );
        if serving {
            r.lock().until = None;
            r.consecutive.store(0, Relaxed);
            tracing::info!(
                backend = &*set.backend,
                endpoint = r.addr,
                "endpoint returns to the rotation: it answers health checks again"
            );
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_answer_time_jumps_to_a_peak_and_forgets_it_slowly() {
        let start = Instant::now();
        let mut rtt = Rtt::new(start);
        rtt.observe(Duration::from_millis(10), start);
        assert!((rtt.estimate(start) - 10e6).abs() < 1.0);
        // A slow answer is taken at once.
        rtt.observe(Duration::from_millis(100), start);
        assert!((rtt.estimate(start) - 100e6).abs() < 1.0);
        // Fast answers soon after move it only a little...
        let soon = start + Duration::from_millis(100);
        rtt.observe(Duration::from_millis(10), soon);
        assert!(rtt.estimate(soon) > 90e6, "{}", rtt.estimate(soon));
        // ...and with no answers it decays: after a decay time, to about a third.
        let later = soon + RTT_DECAY;
        assert!(rtt.estimate(later) < 40e6, "{}", rtt.estimate(later));
    }
}
