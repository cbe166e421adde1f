//! Finding an endpoint back: while it is down (unreachable or silent) or ejected for want of a
//! connection, one task asks it every [`CHECK_EVERY`] for its `grpc.health.v1` status, on a
//! connection of its own; an answer brings it back at once, so a restarted replica takes calls
//! again within a fraction of a second rather than after `--eject-time`. (Envoy pairs outlier
//! ejection with active health checks the same way; a gRPC channel in TRANSIENT_FAILURE keeps
//! reconnecting in the background while its calls fail fast.)
//!
//! What counts as back: SERVING, or UNIMPLEMENTED (a server without the health service
//! answered, which is all a silent or unreachable endpoint could not do). NOT_SERVING (a
//! server draining) keeps it out. An endpoint ejected for UNAVAILABLE answers is not checked:
//! it is up, and says it is serving, while failing calls; it waits out its time.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::{Replica, Replicas};

/// How often a down endpoint is asked whether it is back, and how long an answer may take.
pub const CHECK_EVERY: Duration = Duration::from_millis(250);

/// Starts checking `r`, unless a check of it already runs.
pub(super) fn watch(replicas: &Arc<Replicas>, r: &Arc<Replica>) {
    if r.probing.swap(true, Relaxed) {
        return;
    }
    tokio::spawn(check_until_back(Arc::downgrade(replicas), r.clone()));
}

async fn check_until_back(replicas: Weak<Replicas>, r: Arc<Replica>) {
    // The first check at once: connections lost to a blip (a reset, a restart already over)
    // should cost their calls no more than this one check.
    let mut first = true;
    loop {
        if !std::mem::take(&mut first) {
            tokio::time::sleep(CHECK_EVERY).await;
        }
        let Some(set) = replicas.upgrade() else {
            return;
        };
        let out = r.is_down() || r.ejected(Instant::now());
        if !out || !set.current().iter().any(|c| c.id == r.id) {
            r.probing.store(false, Relaxed);
            return;
        }
        if answers(&set, &r).await {
            r.restore();
            r.probing.store(false, Relaxed);
            tracing::info!(
                backend = &*set.backend,
                endpoint = r.addr,
                "endpoint back: it answers health checks again"
            );
            return;
        }
    }
}

/// Whether `r` answers a health check as a server that takes calls.
async fn answers(set: &Replicas, r: &Replica) -> bool {
    let Ok(channel) =
        crate::client::fetch::channel(&r.url, r.origin.as_deref(), set.keepalive, &set.tls)
    else {
        return false;
    };
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest::default());
    match tokio::time::timeout(CHECK_EVERY, check).await {
        Ok(Ok(answer)) => answer.get_ref().status() == ServingStatus::Serving,
        Ok(Err(status)) => status.code() == tonic::Code::Unimplemented,
        Err(_elapsed) => false,
    }
}
