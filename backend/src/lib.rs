//! `backend`: a simulated slow dependency, served over gRPC as `fanout.v1.Backend`.
//!
//! Each `Fetch` draws a latency from a [`latency::LatencySpec`], waits it out in one of four
//! ways (the [`Mode`]: async, blocking the runtime, on the blocking pool, or burning CPU), then
//! answers, or fails with `UNAVAILABLE` at the configured rate.
//!
//! - [`cli`]: flags (each also an env var) into a [`Config`].
//! - [`latency`]: the latency specs and how they are drawn.
//! - [`service`]: the gRPC service itself.
//! - [`run`] serves it on a listener until a shutdown future fires; [`spawn`] does the same on a
//!   runtime and thread of its own (tests, the loadgen's local deployment).
#![forbid(unsafe_code)]

pub mod cli;
pub mod latency;
pub mod metrics;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fanout_proto::v1::Mode;
use fanout_proto::v1::backend_server::BackendServer;
use fanout_server::metrics::Metrics;
use fanout_server::thread::ServerThread;
use fanout_server::{ConnLimits, Counters, ServeError, Server};
use fanout_tls::ServerTlsFiles;
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

use crate::latency::LatencySpec;
use crate::service::BackendService;

/// Upper bound for `--workers`.
pub const MAX_WORKERS: u16 = 1024;

/// What one backend does; built once from the flags, passed by value.
#[derive(Debug, Clone)]
pub struct Config {
    /// Appears in replies; the aggregator addresses the backend by it.
    pub name: String,
    pub latency: LatencySpec,
    /// Probability (0 to 1) that a call fails with `UNAVAILABLE`.
    pub fail_rate: f64,
    /// How calls wait, unless a request overrides it.
    pub mode: Mode,
    /// Whether requests may set `delay_ms`, `fail` and `mode`.
    pub allow_overrides: bool,
    /// Makes the draws repeatable.
    pub seed: Option<u64>,
    /// The most calls worked on at once (the rest wait their turn); `None`: no limit.
    pub capacity: Option<usize>,
    /// After a shutdown signal, how long to keep serving with health NOT_SERVING.
    pub drain_delay: Duration,
    /// How long in-flight calls may take to finish after a shutdown signal.
    pub grace_period: Duration,
    /// Serve TLS (mTLS with a client CA) with these files; plaintext without.
    pub tls: Option<ServerTlsFiles>,
    /// What one client connection may do.
    pub limits: ConnLimits,
    /// Serve Prometheus metrics at `/metrics` on this address; off without.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            name: "backend".into(),
            latency: LatencySpec::Fixed(Duration::from_millis(50)),
            fail_rate: 0.0,
            mode: Mode::Async,
            allow_overrides: false,
            seed: None,
            capacity: None,
            drain_delay: Duration::ZERO,
            grace_period: fanout_server::serve::DEFAULT_GRACE,
            tls: None,
            limits: ConnLimits::default(),
            metrics_listen: None,
        }
    }
}

/// The methods whose metric series are resolved at start.
const METHODS: &[&str] = &[
    "/fanout.v1.Backend/Fetch",
    "/fanout.v1.Backend/Stats",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// Serves the backend on `listener` until `shutdown` resolves, then drains in-flight calls for
/// at most the grace period.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tracing::info!(
        name = config.name,
        latency = %config.latency,
        fail_rate = config.fail_rate,
        mode = config.mode.cli_name(),
        allow_overrides = config.allow_overrides,
        capacity = ?config.capacity,
        "backend starting"
    );
    let counters = Arc::new(Counters::default());
    let metrics_listen = config.metrics_listen;
    let mut server = Server {
        service_name: <BackendServer<BackendService> as NamedService>::NAME,
        counters: counters.clone(),
        drain_delay: config.drain_delay,
        grace: config.grace_period,
        tls: config.tls.clone(),
        limits: config.limits,
        metrics: None,
    };
    let mut service = BackendService::new(config, counters.clone());
    if let Some(addr) = metrics_listen {
        let (mut registry, calls) = Metrics::base(counters, METHODS);
        service = service.with_metrics(&mut registry);
        server.metrics = Some((addr, Metrics::new(registry, calls)));
    }
    let service = BackendServer::new(service)
        .max_decoding_message_size(fanout_proto::limits::MAX_MESSAGE_BYTES);
    server.serve(Routes::new(service), listener, shutdown).await
}

/// Starts a backend on a runtime of its own with `workers` threads (0 = one per core), bound to
/// `bind`; dropping the handle shuts it down.
pub fn spawn(config: Config, workers: usize, bind: SocketAddr) -> std::io::Result<ServerThread> {
    let label = format!("backend-{}", config.name);
    ServerThread::start(&label, workers, bind, move |listener, stop| {
        run(config, listener, async {
            let _ = stop.await;
        })
    })
}
