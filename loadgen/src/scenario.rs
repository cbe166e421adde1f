//! What the scenarios (`tail`, `overload`, `resilience`) share: a local deployment with the aggregator's
//! policies under test, an open loop of aggregate calls against it, and the aggregator's own
//! counters read around the load.

use std::time::Duration;

use fanout_proto::paths;
use fanout_proto::v1::{AggregateRequest, FetchRequest, ServerStats, StatsRequest};
use fanout_tls::ClientTlsArgs;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::caller;
use crate::conn::Conn;
use crate::deploy::{Deployment, DeploymentSpec};
use crate::model::{Load, Outcome, Rpc, Shape};
use crate::run::measure;
use crate::target::{connect, probe, probe_caller};

/// Connections the load is spread over.
const CONNECTIONS: u32 = 4;
/// Calls outstanding at once at most: far above what any scenario's target holds, so nothing
/// is dropped by the loadgen (the aggregator sheds, or not, as its policies say).
const MAX_OUTSTANDING: usize = 20_000;
/// How long the calls still outstanding when a schedule ends may take.
const DRAIN: Duration = Duration::from_secs(5);

/// A local deployment, connected: two sets of connections for the load (two open loops may
/// overlap, and a loop that ends stops everything running on its connections) and one apart
/// for `Stats`.
pub struct Stack {
    deployment: Deployment,
    lanes: [Vec<Conn>; 2],
    stats: Conn,
}

/// One open loop of aggregate calls, as a scenario asks for it.
#[derive(Debug, Clone)]
pub struct Offer<'a> {
    pub lane: Lane,
    /// What the progress line calls it.
    pub label: String,
    pub request: &'a AggregateRequest,
    /// Calls per second, on a fixed schedule whatever the target does.
    pub rate: f64,
    /// Calls made, not measured, before the window.
    pub warmup: Duration,
    /// The measured window.
    pub duration: Duration,
    /// A backend the scenario broke on purpose: its part failing is the expected answer, so
    /// it does not make a call degraded (the other backends' parts still do).
    pub excused: Option<&'a str>,
}

/// Which set of connections an open loop runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    A = 0,
    B = 1,
}

impl Stack {
    /// Starts `spec` on loopback and checks that it answers aggregate calls.
    pub async fn start(spec: &DeploymentSpec) -> anyhow::Result<Self> {
        let deployment = Deployment::start(spec).await?;
        let url = deployment.target();
        let tls = ClientTlsArgs::default();
        let connected = async {
            let a = connect(&url, CONNECTIONS, &tls).await?;
            probe(&url, &a[0], Rpc::Aggregate).await?;
            let b = connect(&url, CONNECTIONS, &tls).await?;
            let stats = connect(&url, 1, &tls).await?.remove(0);
            anyhow::Ok(([a, b], stats))
        }
        .await;
        match connected {
            Ok((lanes, stats)) => Ok(Stack {
                deployment,
                lanes,
                stats,
            }),
            Err(e) => {
                deployment.stop().await;
                Err(e)
            }
        }
    }

    /// An open loop of `request` at `rate` calls/s on `lane`: `warmup` unmeasured, then
    /// `duration` measured, then at most [`DRAIN`] for the calls still outstanding. One call
    /// first checks that the target takes the request.
    #[allow(clippy::too_many_arguments)]
    pub async fn open_loop(
        &self,
        lane: Lane,
        label: String,
        request: &AggregateRequest,
        rate: f64,
        warmup: Duration,
        duration: Duration,
        stop: watch::Receiver<bool>,
    ) -> anyhow::Result<Outcome> {
        self.probe(request).await?;
        let offer = Offer {
            lane,
            label,
            request,
            rate,
            warmup,
            duration,
            excused: None,
        };
        Ok(self.offer(offer, stop).await)
    }

    /// One aggregate call of `request`, so that a request the target refuses stops the
    /// scenario with the target's reason (and the aggregator has met its backends).
    pub async fn probe(&self, request: &AggregateRequest) -> anyhow::Result<()> {
        let caller = caller::Caller::new(
            &self.lanes[0][0],
            Rpc::Aggregate,
            &FetchRequest::default(),
            request,
            None,
        );
        probe_caller(&caller).await
    }

    /// The open loop `offer` describes, with no call before it: a cold start measures the
    /// aggregator's very first calls.
    pub async fn offer(&self, offer: Offer<'_>, stop: watch::Receiver<bool>) -> Outcome {
        let load = Load {
            shape: Shape::Open {
                rate: offer.rate,
                max_outstanding: MAX_OUTSTANDING,
                drain: DRAIN,
            },
            duration: Some(offer.duration),
            requests: None,
            warmup: offer.warmup,
            timeout: None,
        };
        let callers = caller::callers(
            Rpc::Aggregate,
            &self.lanes[offer.lane as usize],
            &FetchRequest::default(),
            offer.request,
            None,
        )
        .into_iter()
        .map(|c| c.excusing(offer.excused))
        .collect();
        measure(offer.label, load, callers, stop, Instant::now()).await
    }

    /// The servers, for a scenario that changes them under load (a relay to freeze or kill).
    pub fn deployment(&self) -> &Deployment {
        &self.deployment
    }

    /// The aggregator's counters now.
    pub async fn server_stats(&self) -> anyhow::Result<ServerStats> {
        server_stats(&self.stats).await
    }

    /// Shuts the deployment down.
    pub async fn stop(self) {
        self.deployment.stop().await;
    }
}

/// The counters of the aggregator at the other end of `conn`.
pub async fn server_stats(conn: &Conn) -> anyhow::Result<ServerStats> {
    conn.call::<ServerStats>(
        paths::AGGREGATOR_STATS,
        &StatsRequest {},
        Duration::from_secs(5),
    )
    .await
    .map_err(|s| {
        anyhow::anyhow!(
            "cannot read the aggregator's Stats ({}: {})",
            fanout_proto::code_name(s.code()),
            s.message()
        )
    })
}
