//! A backend's replicas: the set of endpoints one backend name stands for, and the health of
//! each.
//!
//! - `discovery`: where they come from (the flags, DNS re-resolved every
//!   `--resolve-interval`).
//! - `rtt`: each endpoint's answer time, peak-EWMA, which the pick weighs.
//! - **Outlier ejection**, Envoy's consecutive-errors detector: after `--eject-after` connection
//!   failures or UNAVAILABLE answers in a row, an endpoint leaves the rotation for
//!   `--eject-time`, longer each time it is ejected again, never with more than half of the set
//!   ejected at once; it comes back by itself when its time is up.
//! - **Down**: an endpoint known unreachable ([`DOWN_AFTER`] connections failed in a row) or
//!   silent (calls given up on again and again without an answer, see [`super::silence`])
//!   takes no calls at all, whatever the half rule says; when every endpoint of a backend is
//!   down, its calls fail fast with UNAVAILABLE (gRPC's TRANSIENT_FAILURE for calls that do not
//!   wait for ready), so a sick backend costs a call only its own part, at once.
//! - `health`: one health check at a time finds a down (or connection-ejected) endpoint back.
//!
//! The set is shared by every runtime that calls the backend; each runtime keeps its own
//! channels to the endpoints (see [`super::balance`]).

mod discovery;
mod health;
mod rtt;

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_tls::ClientTls;
use tokio::sync::watch;
use tokio::time::Instant;

pub use self::discovery::{Dns, Resolve, Resolver};
use self::discovery::{Name, Source, resolve_forever};
use self::rtt::Rtt;
use super::fetch::Keepalive;
use super::silence::Silence;

/// Connections failed in a row that make an endpoint known unreachable.
pub const DOWN_AFTER: u32 = 2;

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
    /// Connections failed since the last answer, and the last one's error.
    connect_failures: AtomicU32,
    unreachable: Mutex<Option<String>>,
    /// Whether a health check loop runs for it (one at a time).
    probing: AtomicBool,
    /// Times it was found unreachable or silent.
    pub down_verdicts: AtomicU32,
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
            connect_failures: AtomicU32::new(0),
            unreachable: Mutex::new(None),
            probing: AtomicBool::new(false),
            down_verdicts: AtomicU32::new(0),
        }
    }

    /// Whether it is known down: unreachable or silent. It takes no calls until a health check
    /// (or a call that got through anyway) finds it back.
    pub fn is_down(&self) -> bool {
        self.silence.is_silent() || self.connect_failures.load(Relaxed) >= DOWN_AFTER
    }

    /// Why it is down, for the failure of a call that found no endpoint up.
    fn down_because(&self) -> String {
        if self.silence.is_silent() {
            return format!(
                "{} is silent ({} calls in a row given up on without an answer)",
                self.addr,
                super::silence::SILENT_AFTER
            );
        }
        let last = self.unreachable.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "{} is unreachable ({})",
            self.addr,
            last.as_deref().unwrap_or("connections failed")
        )
    }

    /// Notes why a connection to it failed.
    pub fn note_unreachable(&self, why: &str) {
        *self.unreachable.lock().unwrap_or_else(|p| p.into_inner()) = Some(why.to_owned());
    }

    /// Back in service: up, in the rotation, its counts of failures cleared.
    fn restore(&self) {
        self.connect_failures.store(0, Relaxed);
        self.consecutive.store(0, Relaxed);
        self.silence.answered();
        self.lock().until = None;
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

/// Where a call goes.
#[derive(Debug)]
pub enum Pick {
    Endpoint(Arc<Replica>),
    /// Every endpoint is known down: fail fast, saying why.
    AllDown(String),
    /// No endpoint at all (a name that resolved to none).
    None,
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

    /// Power of two choices: of the endpoints up and in rotation, preferring those this call
    /// has not tried yet, two at random, and of those the cheaper: answer time (peak-EWMA)
    /// times the calls it would then have in flight. Endpoints known down are never picked;
    /// when all are, the call fails fast.
    pub fn pick(&self, tried: &[u64]) -> Pick {
        let set = self.current();
        if set.is_empty() {
            return Pick::None;
        }
        let now = Instant::now();
        let up: Vec<&Arc<Replica>> = set.iter().filter(|r| !r.is_down()).collect();
        if up.is_empty() {
            let why: Vec<String> = set.iter().map(|r| r.down_because()).collect();
            return Pick::AllDown(format!(
                "{}; failing fast until a health check finds it back",
                why.join("; ")
            ));
        }
        let in_rotation: Vec<&Arc<Replica>> = up
            .iter()
            .copied()
            .filter(|r| !self.returned_or_out(r, now))
            .collect();
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
            // Every endpoint up but ejected cannot happen (at most half are), but a set of one
            // whose only endpoint is out still gets called: better a likely failure than none.
            up
        };
        use rand::Rng;
        let mut rng = rand::rng();
        let pick = match pool.len() {
            1 => pool[0],
            n => {
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (a, b) = (pool[a], pool[b]);
                if a.cost(now) <= b.cost(now) { a } else { b }
            }
        };
        Pick::Endpoint(pick.clone())
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

    /// Counts one call's outcome at `r` (which took `took`): ejects it when it has failed too
    /// often in a row, marks it down when it is unreachable or silent (and starts the health
    /// checks that find it back).
    pub fn record(self: &Arc<Self>, r: &Arc<Replica>, verdict: Verdict, took: Duration) {
        let now = Instant::now();
        match verdict {
            Verdict::Answered => {
                r.served.fetch_add(1, Relaxed);
                r.consecutive.store(0, Relaxed);
                let was_unreachable = r.connect_failures.swap(0, Relaxed) >= DOWN_AFTER;
                r.rtt
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .observe(took, now);
                if r.silence.answered() || was_unreachable {
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
                let ejected = n >= self.policy.eject_after && self.eject(r);
                let down = connection && r.connect_failures.fetch_add(1, Relaxed) + 1 == DOWN_AFTER;
                if down {
                    r.down_verdicts.fetch_add(1, Relaxed);
                    tracing::warn!(
                        backend = &*self.backend,
                        endpoint = r.addr,
                        in_a_row = DOWN_AFTER,
                        "endpoint unreachable: connections fail; its calls fail fast until a \
                         health check finds it back"
                    );
                }
                // Out for want of a connection: find out as soon as it takes them again.
                if down || (ejected && connection) {
                    health::watch(self, r);
                }
            }
            Verdict::Unknown => {
                r.failed.fetch_add(1, Relaxed);
            }
            Verdict::GivenUp => {
                r.failed.fetch_add(1, Relaxed);
                if r.silence.given_up(took) {
                    r.down_verdicts.fetch_add(1, Relaxed);
                    tracing::warn!(
                        backend = &*self.backend,
                        endpoint = r.addr,
                        in_a_row = super::silence::SILENT_AFTER,
                        "endpoint silent: calls timed out in a row without an answer; its calls \
                         fail fast until a health check finds it back"
                    );
                    health::watch(self, r);
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
}
