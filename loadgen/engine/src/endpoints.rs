//! Which replica served how much: the aggregator's `Stats` (one `EndpointStats` per backend
//! endpoint) read before and after the measured window, and each endpoint's share of the calls
//! its backend's endpoints served in between. The same against a local deployment with
//! `--replicas` and against a `--target` aggregator.

use std::collections::BTreeMap;
use std::time::Duration;

use fanout_proto::paths;
use fanout_proto::v1::{EndpointStats, ServerStats, StatsRequest};

use crate::conn::Conn;
use crate::model::EndpointShare;

/// The aggregator's endpoints now; `None` if its Stats cannot be read (the report then has no
/// shares, and says why on stderr).
pub async fn read(conn: &Conn) -> Option<Vec<EndpointStats>> {
    match conn
        .call::<ServerStats>(
            paths::AGGREGATOR_STATS,
            &StatsRequest {},
            Duration::from_secs(5),
        )
        .await
    {
        Ok(stats) => Some(stats.endpoints),
        Err(s) => {
            eprintln!(
                "cannot read the aggregator's Stats ({}: {}): no per-replica shares in this report",
                fanout_proto::code_name(s.code()),
                s.message()
            );
            None
        }
    }
}

/// What each endpoint did between `before` and `after`, in backend order. An endpoint that
/// appeared in between (a name resolving to a new address) counts from zero.
pub fn between(before: &[EndpointStats], after: &[EndpointStats]) -> Vec<EndpointShare> {
    let earlier: BTreeMap<(&str, &str), &EndpointStats> = before
        .iter()
        .map(|e| ((e.backend.as_str(), e.address.as_str()), e))
        .collect();
    let moved = after
        .iter()
        .map(|e| {
            let was = earlier.get(&(e.backend.as_str(), e.address.as_str()));
            let since = |now: u64, then: fn(&EndpointStats) -> u64| {
                now.saturating_sub(was.map_or(0, |w| then(w)))
            };
            EndpointShare {
                backend: e.backend.clone(),
                address: e.address.clone(),
                served: since(e.served, |w| w.served),
                failed: since(e.failed, |w| w.failed),
                share: 0.0,
                ejections: since(u64::from(e.ejections), |w| u64::from(w.ejections)),
            }
        })
        .collect();
    with_shares(moved)
}

/// `endpoints` with each one's share of what its backend's endpoints served filled in.
pub fn with_shares(mut endpoints: Vec<EndpointShare>) -> Vec<EndpointShare> {
    let mut per_backend: BTreeMap<String, u64> = BTreeMap::new();
    for e in &endpoints {
        *per_backend.entry(e.backend.clone()).or_default() += e.served;
    }
    for e in &mut endpoints {
        let total = per_backend[&e.backend];
        e.share = if total > 0 {
            e.served as f64 / total as f64
        } else {
            0.0
        };
    }
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(backend: &str, address: &str, served: u64, ejections: u32) -> EndpointStats {
        EndpointStats {
            backend: backend.into(),
            address: address.into(),
            served,
            ejections,
            ..Default::default()
        }
    }

    #[test]
    fn shares_are_of_the_window_and_per_backend() {
        let before = [endpoint("a", "x:1", 100, 0), endpoint("a", "x:2", 50, 1)];
        let after = [
            endpoint("a", "x:1", 400, 0),
            endpoint("a", "x:2", 150, 2),
            // Appeared during the window.
            endpoint("a", "x:3", 0, 0),
            endpoint("b", "y:1", 70, 0),
        ];
        let shares = between(&before, &after);
        let got: Vec<(u64, f64, u64)> = shares
            .iter()
            .map(|s| (s.served, s.share, s.ejections))
            .collect();
        assert_eq!(
            got,
            [(300, 0.75, 0), (100, 0.25, 1), (0, 0.0, 0), (70, 1.0, 0)]
        );
    }
}
