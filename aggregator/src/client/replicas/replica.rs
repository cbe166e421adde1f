//! One endpoint of a backend and what is known of its health: its counts, its ejection, its
//! answer time, whether it is down and why.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use tokio::time::Instant;

use super::DOWN_AFTER;
use super::rtt::Rtt;
use crate::client::silence::{SILENT_AFTER, Silence};

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
    pub(super) consecutive: AtomicU32,
    pub(super) ejection: Mutex<Ejection>,
    /// Its answer time, peak-EWMA (see [`Rtt`]).
    pub(super) rtt: Mutex<Rtt>,
    /// Calls timed out without an answer since the last one.
    pub silence: Silence,
    /// Connections failed since the last answer, and the last one's error.
    pub(super) connect_failures: AtomicU32,
    pub(super) unreachable: Mutex<Option<String>>,
    /// Whether a health check loop runs for it (one at a time).
    pub(super) probing: AtomicBool,
    /// Times it was found unreachable or silent.
    pub down_verdicts: AtomicU32,
}

#[derive(Debug, Default)]
pub(super) struct Ejection {
    /// Out of the rotation until then.
    pub(super) until: Option<Instant>,
    /// Times ejected so far.
    pub(super) times: u32,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl Replica {
    pub(super) fn new(scheme: &str, addr: SocketAddr, origin: Option<String>) -> Self {
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
    pub(super) fn down_because(&self) -> String {
        if self.silence.is_silent() {
            return format!(
                "{} is silent ({} calls in a row given up on without an answer)",
                self.addr, SILENT_AFTER
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
    pub(super) fn restore(&self) {
        self.connect_failures.store(0, Relaxed);
        self.consecutive.store(0, Relaxed);
        self.silence.answered();
        self.lock().until = None;
    }

    /// What calling it costs now: its answer-time estimate times the calls it would then have.
    pub(super) fn cost(&self, now: Instant) -> f64 {
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

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, Ejection> {
        self.ejection.lock().unwrap_or_else(|p| p.into_inner())
    }
}
