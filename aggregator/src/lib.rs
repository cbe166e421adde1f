//! `aggregator`: fans one request out to several backends over gRPC, as `fanout.v1.Aggregator`.
//!
//! How a call flows through the parts:
//!
//! 1. [`request`] checks the request and turns it into a [`request::Plan`]: which backends, the
//!    overall deadline (smallest of the request's, the caller's `grpc-timeout` and `--deadline`),
//!    the per-attempt timeout, the fan-out mode.
//! 2. [`service`] admits the call under `--max-in-flight` (or sheds it with
//!    `RESOURCE_EXHAUSTED` at once), then runs the plan.
//! 3. [`fanout`] calls the backends concurrently, one after another, or (on purpose, to show the
//!    mistake) blocking the async worker, and yields each backend's result as it completes.
//! 4. [`client`] is one backend's call: a tower stack over tonic's generated client (cache,
//!    retries with backoff and a budget, a span per attempt, the concurrency limit, the attempt
//!    timeout), built per backend by [`backends`].
//! 5. A failure becomes a backend's `Failure` in [`client::error`], and a refused request the
//!    call's `Status` in [`error`].
//!
//! A call is a future (or a stream, for `AggregateStream`): when the caller goes away it is
//! dropped, and with it every outstanding backend call.
#![forbid(unsafe_code)]

pub mod admission;
pub mod backends;
pub mod cli;
pub mod client;
pub mod error;
pub mod fanout;
pub mod metrics;
pub mod request;
pub mod service;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fanout_proto::v1::Fanout;
use fanout_proto::v1::aggregator_server::AggregatorServer;
use fanout_server::metrics::Metrics;
use fanout_server::thread::ServerThread;
use fanout_server::{ConnLimits, Counters, ServeError, Server};
use fanout_tls::{ClientTls, ClientTlsFiles, ServerTlsFiles};
use tokio::net::TcpListener;
use tonic::server::NamedService;
use tonic::service::Routes;

pub use crate::admission::Admission;
pub use crate::backends::BackendSpec;
pub use crate::client::hedge::{HedgeAfter, HedgePolicy};
pub use crate::client::limit::Limit;
pub use crate::client::replicas::{ReplicaPolicy, Resolver};
pub use crate::client::retry::RetryPolicy;
use crate::service::AggregatorService;

/// What the aggregator does; built once from the flags, passed by value.
#[derive(Debug, Clone)]
pub struct Config {
    /// The backends, by name, in the order results are listed when they tie.
    pub backends: Vec<BackendSpec>,
    /// Bound on one attempt at one backend, unless the request sets a smaller one.
    pub attempt_timeout: Duration,
    /// Bound on a whole call, unless the request or the caller's `grpc-timeout` is smaller.
    pub deadline: Duration,
    pub retry: RetryPolicy,
    /// Hedging: off unless `--hedge-after` (or a request's `hedge_after_ms`) says when.
    pub hedge: HedgePolicy,
    /// Calls in flight at one backend: a fixed number, or `auto` (none refused until the backend
    /// is overloaded, then what it can take). More wait for a slot, at most `queue_timeout`,
    /// and never past the deadline.
    pub backend_concurrency: Limit,
    /// How long a call may wait for a backend slot; `None`: 20 ms with `auto` limits, until the
    /// deadline with fixed ones.
    pub queue_timeout: Option<Duration>,
    /// Aggregate calls in flight: a fixed number, or `auto` (refusing a call only for an
    /// overloaded backend it needs); the next is shed with RESOURCE_EXHAUSTED.
    pub max_in_flight: Admission,
    /// The fan-out used unless a request overrides it.
    pub fanout: Fanout,
    /// With calls in flight, an HTTP/2 ping to a backend after this long without a frame from
    /// it; a backend that does not answer one within `keepalive_timeout` has its connection
    /// dropped and reconnected.
    pub keepalive_interval: Duration,
    pub keepalive_timeout: Duration,
    /// How replicas are found (re-resolved how often) and judged (ejected when).
    pub replicas: ReplicaPolicy,
    /// How host names are resolved: the system's resolver, unless a test injects another.
    pub resolver: Resolver,
    /// How long a backend's reply stays cached; zero turns the cache off.
    pub cache_ttl: Duration,
    /// Whether requests may set `fanout`, `mode` and `delay_ms`.
    pub allow_overrides: bool,
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
    /// Whom to trust, and what certificate to show, when calling `https://` backends.
    pub backend_tls: ClientTlsFiles,
}

impl Config {
    /// The defaults, for these backends.
    pub fn new(backends: Vec<BackendSpec>) -> Self {
        Self {
            backends,
            ..Self::default()
        }
    }
}

impl Default for Config {
    /// The defaults of the flags (which `--help` shows from here), with no backends yet.
    fn default() -> Self {
        Self {
            backends: Vec::new(),
            attempt_timeout: Duration::from_secs(1),
            deadline: Duration::from_secs(2),
            retry: RetryPolicy::default(),
            hedge: HedgePolicy::default(),
            backend_concurrency: Limit::Auto,
            queue_timeout: None,
            max_in_flight: Admission::Auto,
            fanout: Fanout::Concurrent,
            keepalive_interval: Duration::from_secs(5),
            keepalive_timeout: Duration::from_secs(5),
            replicas: ReplicaPolicy::default(),
            resolver: Resolver::default(),
            cache_ttl: Duration::ZERO,
            allow_overrides: false,
            drain_delay: Duration::ZERO,
            grace_period: fanout_server::serve::DEFAULT_GRACE,
            tls: None,
            limits: ConnLimits::default(),
            metrics_listen: None,
            backend_tls: ClientTlsFiles::default(),
        }
    }
}

/// The methods whose metric series are resolved at start.
const METHODS: &[&str] = &[
    "/fanout.v1.Aggregator/Aggregate",
    "/fanout.v1.Aggregator/AggregateStream",
    "/fanout.v1.Aggregator/ClearCache",
    "/fanout.v1.Aggregator/Stats",
    "/grpc.health.v1.Health/Check",
    "/grpc.health.v1.Health/Watch",
];

/// Serves the aggregator on `listener` until `shutdown` resolves, then drains in-flight calls
/// for at most the grace period. Backend channels connect lazily: the aggregator starts even
/// when its backends are down.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    tracing::info!(
        backends = ?config.backends.iter().map(ToString::to_string).collect::<Vec<_>>(),
        fanout = config.fanout.cli_name(),
        attempt_timeout = ?config.attempt_timeout,
        deadline = ?config.deadline,
        "aggregator starting"
    );
    // Our own files first: a bad certificate stops the aggregator before it serves anything.
    let backend_tls = ClientTls::load(&config.backend_tls)?;
    let counters = Arc::new(Counters::default());
    let mut server = Server {
        service_name: <AggregatorServer<AggregatorService> as NamedService>::NAME,
        counters: counters.clone(),
        drain_delay: config.drain_delay,
        grace: config.grace_period,
        tls: config.tls.clone(),
        limits: config.limits,
        metrics: None,
    };
    let service = match config.metrics_listen {
        None => AggregatorService::new(config, counters, backend_tls, None),
        Some(addr) => {
            let (mut registry, calls) = Metrics::base(counters.clone(), METHODS);
            let service =
                AggregatorService::new(config, counters, backend_tls, Some(&mut registry));
            server.metrics = Some((addr, Metrics::new(registry, calls)));
            service
        }
    };
    let service = AggregatorServer::new(service)
        .max_decoding_message_size(fanout_proto::limits::MAX_MESSAGE_BYTES);
    server.serve(Routes::new(service), listener, shutdown).await
}

/// Starts an aggregator on a runtime of its own with `workers` threads (0 = one per core),
/// bound to `bind`; dropping the handle shuts it down.
pub fn spawn(config: Config, workers: usize, bind: SocketAddr) -> std::io::Result<ServerThread> {
    ServerThread::start("aggregator", workers, bind, move |listener, stop| {
        run(config, listener, async {
            let _ = stop.await;
        })
    })
}
