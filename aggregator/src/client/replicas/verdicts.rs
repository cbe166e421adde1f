//! What each call's outcome does to its endpoint: an answer teaches its answer time and clears
//! its failures; failures in a row eject it (never more than half of the set); connections that
//! fail or calls given up on without an answer mark it down, and a health check starts to find
//! it back.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;

use super::{DOWN_AFTER, Replica, Replicas, health};
use crate::client::silence::SILENT_AFTER;

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

impl Replicas {
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
            // The caller went away (a cancelled call, Ctrl-C at a loadgen): not the endpoint's
            // failure, and not counted as one (Stats' `failed` says so).
            Verdict::Unknown => {}
            Verdict::GivenUp => {
                r.failed.fetch_add(1, Relaxed);
                if r.silence.given_up(took) {
                    r.down_verdicts.fetch_add(1, Relaxed);
                    tracing::warn!(
                        backend = &*self.backend,
                        endpoint = r.addr,
                        in_a_row = SILENT_AFTER,
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
