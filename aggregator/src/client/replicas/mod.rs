//! A backend's replicas: the set of endpoints one backend name stands for, and the health of
//! each.
//!
//! - `discovery`: where they come from (the flags, DNS re-resolved every
//!   `--resolve-interval`).
//! - `replica`: one endpoint and what is known of its health.
//! - `rtt`: each endpoint's answer time, peak-EWMA, which the pick weighs.
//! - `pick`: power of two choices over the endpoints up and in rotation.
//! - `verdicts`: what each call's outcome does to its endpoint (ejection, down).
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
mod pick;
mod replica;
mod rtt;
mod verdicts;

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_tls::ClientTls;
use tokio::sync::watch;

pub use self::discovery::{Dns, Resolve, Resolver};
use self::discovery::{Name, Source, resolve_forever};
pub use self::replica::Replica;
pub use self::verdicts::Verdict;
use super::fetch::Keepalive;

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
}
