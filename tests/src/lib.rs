//! Helpers for the end-to-end tests: start real servers on `127.0.0.1:0`, each on a runtime of
//! its own (so a server's worker count is its own, as in production), and connect real gRPC
//! clients to them. Servers stop when their handle is dropped.
#![forbid(unsafe_code)]

pub mod hostile;
pub mod load;
pub mod local;
pub mod otlp;
pub mod pki;
pub mod process;
pub mod raw;

use std::time::{Duration, Instant};

use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_proto::v1::backend_client::BackendClient;
use fanout_proto::v1::{AggregateRequest, FetchRequest, ServerStats, StatsRequest};
use fanout_server::thread::ServerThread;
use tonic::transport::Channel;

pub use aggregator::Config as AggregatorConfig;
pub use backend::Config as BackendConfig;

/// A backend config for tests: named, with the given latency spec, a short grace period so
/// dropping the server never holds a test up, and everything else at its default.
pub fn backend_config(name: &str, latency: &str) -> BackendConfig {
    BackendConfig {
        name: name.into(),
        latency: latency.parse().expect("test latency spec"),
        grace_period: Duration::from_secs(1),
        ..BackendConfig::default()
    }
}

/// Starts a backend with `workers` runtime threads on a free loopback port.
pub fn start_backend(config: BackendConfig, workers: usize) -> ServerThread {
    backend::spawn(config, workers, "127.0.0.1:0".parse().unwrap()).expect("start backend")
}

/// A client connected to `server`.
pub async fn backend_client(server: &ServerThread) -> BackendClient<Channel> {
    BackendClient::connect(server.url())
        .await
        .expect("connect to backend")
}

/// A `Fetch` request with only the query set.
pub fn fetch(query: &str) -> FetchRequest {
    FetchRequest {
        query: query.into(),
        ..Default::default()
    }
}

/// The backend's `Stats`.
pub async fn backend_stats(client: &mut BackendClient<Channel>) -> ServerStats {
    client
        .stats(StatsRequest {})
        .await
        .expect("stats")
        .into_inner()
}

/// Polls `probe` until it returns true or `limit` passes; returns whether it became true.
/// For effects that land asynchronously (a cancellation noticed by a server).
pub async fn eventually<F, Fut>(limit: Duration, mut probe: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    loop {
        if probe().await {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `NAME=URL` for a running backend, for an aggregator's config.
pub fn spec(name: &str, server: &ServerThread) -> aggregator::BackendSpec {
    format!("{name}={}", server.url())
        .parse()
        .expect("backend spec")
}

/// `NAME=URL` for an address where nothing listens (a dead backend).
pub fn dead_spec(name: &str) -> aggregator::BackendSpec {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("{name}=http://{addr}")
        .parse()
        .expect("backend spec")
}

/// An aggregator config for tests over these backends, with a short grace period, and fixed
/// concurrency limits (100 per backend, 1,000 calls admitted): tests of other behaviours must not
/// hang on an adaptive limit reading this shared machine's hiccups as a backend falling behind.
/// The adaptive defaults (`auto`) have tests of their own, which set them.
pub fn aggregator_config(backends: Vec<aggregator::BackendSpec>) -> AggregatorConfig {
    AggregatorConfig {
        grace_period: Duration::from_secs(1),
        backend_concurrency: aggregator::Limit::Fixed(100),
        max_in_flight: aggregator::Admission::Fixed(1000),
        ..AggregatorConfig::new(backends)
    }
}

/// Starts an aggregator with `workers` runtime threads on a free loopback port.
pub fn start_aggregator(config: AggregatorConfig, workers: usize) -> ServerThread {
    aggregator::spawn(config, workers, "127.0.0.1:0".parse().unwrap()).expect("start aggregator")
}

/// A client connected to the aggregator `server`.
pub async fn aggregator_client(server: &ServerThread) -> AggregatorClient<Channel> {
    AggregatorClient::connect(server.url())
        .await
        .expect("connect to aggregator")
}

/// An `Aggregate` request with only the query set.
pub fn aggregate(query: &str) -> AggregateRequest {
    AggregateRequest {
        query: query.into(),
        ..Default::default()
    }
}

/// The aggregator's `Stats`.
pub async fn aggregator_stats(client: &mut AggregatorClient<Channel>) -> ServerStats {
    client
        .stats(StatsRequest {})
        .await
        .expect("stats")
        .into_inner()
}

/// The gRPC code name of a result's failure, or "OK".
pub fn outcome_code(r: &fanout_proto::v1::BackendResult) -> String {
    use fanout_proto::v1::backend_result::Outcome;
    match &r.outcome {
        Some(Outcome::Reply(_)) => "OK".into(),
        Some(Outcome::Failure(f)) => f.code_name.clone(),
        None => "NONE".into(),
    }
}
