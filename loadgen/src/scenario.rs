//! What the scenarios (`tail`, `overload`) share: a local deployment with the aggregator's
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
    /// `duration` measured, then at most [`DRAIN`] for the calls still outstanding.
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
        let load = Load {
            shape: Shape::Open {
                rate,
                max_outstanding: MAX_OUTSTANDING,
                drain: DRAIN,
            },
            duration: Some(duration),
            requests: None,
            warmup,
            timeout: None,
        };
        let callers = caller::callers(
            Rpc::Aggregate,
            &self.lanes[lane as usize],
            &FetchRequest::default(),
            request,
            None,
        );
        probe_caller(&callers[0]).await?;
        Ok(measure(label, load, callers, stop, Instant::now()).await)
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
