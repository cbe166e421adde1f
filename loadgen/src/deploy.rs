//! A local deployment for a measurement: backends (each in one or more replicas) and
//! (optionally) an aggregator on loopback, in this process but each on a runtime of its own
//! with the worker count the configuration calls for, exactly as the binaries run them.
//! Stopped (and waited for) afterwards. A scenario may make some servers unlike the rest
//! ([`ReplicaFault`]): slower, behind a relay it can freeze or kill, or not there at all.

use std::time::Duration;

use anyhow::Context;
use backend::latency::LatencySpec;
use fanout_proto::cli::fmt_duration;
use fanout_proto::v1::{Fanout, Mode};
use fanout_server::thread::ServerThread;
use fanout_tls::ClientTls;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

use crate::faults::{Relay, refusing_url};
use crate::target::error_chain;

/// What to start.
#[derive(Debug, Clone)]
pub struct DeploymentSpec {
    pub backends: usize,
    /// Servers per backend name: the aggregator gets `--backend NAME=URL` once per replica.
    pub replicas: usize,
    pub latency: LatencySpec,
    pub mode: Mode,
    pub backend_workers: usize,
    /// Each backend works on at most this many calls at once, the rest waiting their turn
    /// (the backend's `--capacity`); `None`: no limit.
    pub capacity: Option<usize>,
    /// `None`: backends only.
    pub fanout: Option<Fanout>,
    pub aggregator_workers: usize,
    /// The aggregator's policies (timeouts, retries, hedging, limits), its backends filled in
    /// when it starts. `None`: [`DeploymentSpec::measuring`]'s, for measuring the fan-out alone.
    pub policies: Option<aggregator::Config>,
    /// Probability that a backend call fails with UNAVAILABLE, at every backend (their
    /// `--fail-rate`).
    pub fail_rate: f64,
    /// Servers unlike the rest, each named by its backend and replica.
    pub faults: Vec<ReplicaFault>,
}

/// One server of the deployment made unlike the others, for a scenario to measure what the
/// aggregator does about it.
#[derive(Debug, Clone)]
pub struct ReplicaFault {
    /// The backend, from 1 (`b1`).
    pub backend: usize,
    /// Which of its replicas, from 0.
    pub replica: usize,
    pub kind: FaultKind,
}

#[derive(Debug, Clone)]
pub enum FaultKind {
    /// A latency of its own (a slower replica).
    Latency(LatencySpec),
    /// Behind a [`Relay`] (see [`Deployment::relay`]), which the scenario freezes or kills.
    Relayed,
    /// Never started: the aggregator is given an address that refuses connections.
    Refusing,
}

impl DeploymentSpec {
    /// The aggregator's policies when a measurement is of the fan-out itself: no retries, no
    /// cache, no shedding, and deadlines far beyond any queueing a blocking configuration
    /// builds up.
    pub fn measuring() -> aggregator::Config {
        aggregator::Config {
            attempt_timeout: Duration::from_secs(60),
            deadline: Duration::from_secs(60),
            retry: aggregator::RetryPolicy {
                max_attempts: 1,
                ..Default::default()
            },
            backend_concurrency: aggregator::Limit::Fixed(100_000),
            max_in_flight: aggregator::Admission::Fixed(100_000),
            ..aggregator::Config::default()
        }
    }

    /// One line about the deployment, for the user.
    pub fn describe(&self) -> String {
        let replicas = match self.replicas {
            1 => String::new(),
            r => format!(" x {r} replicas"),
        };
        let capacity = match self.capacity {
            Some(c) => format!(", --capacity {c}"),
            None => String::new(),
        };
        let backends = format!(
            "{} backend(s){replicas} (latency {}, --mode {}{capacity}, {} workers)",
            self.backends,
            self.latency,
            self.mode.cli_name(),
            self.backend_workers
        );
        match self.fanout {
            Some(f) => format!(
                "{backends} behind an aggregator (--fanout {}, {} workers) on 127.0.0.1",
                f.cli_name(),
                self.aggregator_workers
            ),
            None => format!("{backends} on 127.0.0.1"),
        }
    }
}

/// Running servers; [`Deployment::stop`] shuts them down.
#[derive(Debug)]
pub struct Deployment {
    /// Every backend server started: the replicas of `b1`, then of `b2`, ... (a
    /// [`FaultKind::Refusing`] one is not there).
    pub backends: Vec<ServerThread>,
    pub aggregator: Option<ServerThread>,
    /// The relays in front of [`FaultKind::Relayed`] servers, with their backend and replica.
    relays: Vec<(usize, usize, Relay)>,
}

impl Deployment {
    /// Starts the servers on free loopback ports and waits until each reports SERVING.
    pub async fn start(spec: &DeploymentSpec) -> anyhow::Result<Self> {
        let loopback = "127.0.0.1:0".parse().expect("loopback address");
        let mut deployment = Deployment {
            backends: Vec::new(),
            aggregator: None,
            relays: Vec::new(),
        };
        // (name, URL) per replica: a name repeated is one backend with several endpoints.
        let mut endpoints = Vec::new();
        for i in 1..=spec.backends {
            let name = format!("b{i}");
            for r in 0..spec.replicas.max(1) {
                let fault = spec
                    .faults
                    .iter()
                    .find(|f| f.backend == i && f.replica == r)
                    .map(|f| &f.kind);
                if let Some(FaultKind::Refusing) = fault {
                    endpoints.push((name.clone(), refusing_url()?));
                    continue;
                }
                let latency = match fault {
                    Some(FaultKind::Latency(l)) => l.clone(),
                    _ => spec.latency.clone(),
                };
                let config = backend::Config {
                    name: name.clone(),
                    latency,
                    fail_rate: spec.fail_rate,
                    mode: spec.mode,
                    capacity: spec.capacity,
                    allow_overrides: true,
                    grace_period: Duration::from_secs(1),
                    ..backend::Config::default()
                };
                let server = match backend::spawn(config, spec.backend_workers, loopback) {
                    Ok(server) => server,
                    Err(e) => {
                        deployment.stop().await;
                        return Err(anyhow::Error::new(e).context("cannot start a local backend"));
                    }
                };
                let url = match fault {
                    Some(FaultKind::Relayed) => {
                        let relay = Relay::start(server.addr())
                            .await
                            .context("cannot start a relay")?;
                        let url = relay.url();
                        deployment.relays.push((i, r, relay));
                        url
                    }
                    _ => server.url(),
                };
                deployment.backends.push(server);
                endpoints.push((name.clone(), url));
            }
        }
        if let Some(fanout) = spec.fanout {
            let specs = endpoints
                .iter()
                .map(|(name, url)| format!("{name}={url}").parse())
                .collect::<Result<Vec<aggregator::BackendSpec>, String>>()
                .map_err(anyhow::Error::msg)?;
            let config = aggregator::Config {
                backends: specs,
                fanout,
                allow_overrides: true,
                grace_period: Duration::from_secs(1),
                ..spec
                    .policies
                    .clone()
                    .unwrap_or_else(DeploymentSpec::measuring)
            };
            match aggregator::spawn(config, spec.aggregator_workers, loopback) {
                Ok(a) => deployment.aggregator = Some(a),
                Err(e) => {
                    deployment.stop().await;
                    return Err(anyhow::Error::new(e).context("cannot start a local aggregator"));
                }
            }
        }
        for server in deployment.backends.iter().chain(&deployment.aggregator) {
            if let Err(e) = wait_serving(&server.url(), Duration::from_secs(10)).await {
                deployment.stop().await;
                return Err(e);
            }
        }
        Ok(deployment)
    }

    /// The relay in front of `backend`'s (from 1) replica `replica` (from 0), if the spec put
    /// one there.
    pub fn relay(&self, backend: usize, replica: usize) -> Option<&Relay> {
        self.relays
            .iter()
            .find(|(b, r, _)| (*b, *r) == (backend, replica))
            .map(|(_, _, relay)| relay)
    }

    /// The URL the load should target: the aggregator, or the first backend.
    pub fn target(&self) -> String {
        self.aggregator.as_ref().unwrap_or(&self.backends[0]).url()
    }

    /// Shuts every server down and waits for them (on a blocking thread: the drain needs the
    /// caller's runtime to keep going).
    pub async fn stop(self) {
        let Deployment {
            backends,
            aggregator,
            relays,
        } = self;
        if let Some(a) = aggregator {
            let _ = tokio::task::spawn_blocking(move || a.stop()).await;
        }
        // The aggregator is gone: the relays (killed as they drop) have nothing left to carry.
        drop(relays);
        let _ = tokio::task::spawn_blocking(move || {
            for b in backends {
                b.stop();
            }
        })
        .await;
    }
}

/// Polls health until the server at `url` reports SERVING.
pub async fn wait_serving(url: &str, limit: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + limit;
    let mut last_error = String::new();
    while tokio::time::Instant::now() < deadline {
        match health(url, "", Duration::from_secs(2), &ClientTls::system()).await {
            Ok(ServingStatus::Serving) => return Ok(()),
            Ok(other) => last_error = format!("health is {}", other.as_str_name()),
            Err(e) => last_error = e,
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!(
        "{url} did not become healthy within {}: {last_error}",
        fmt_duration(limit)
    )
}

/// One health check of `service` ("" = the whole server) at `url` (over TLS with `tls` for
/// `https://`), bounded by `limit`. The error is a sentence for people: what went wrong, not a
/// Debug dump.
pub async fn health(
    url: &str,
    service: &str,
    limit: Duration,
    tls: &ClientTls,
) -> Result<ServingStatus, String> {
    let no_answer = || format!("no answer within {}", fmt_duration(limit));
    let mut endpoint = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("`{url}` is not a URL ({e})"))?
        .connect_timeout(limit);
    if endpoint.uri().scheme_str() == Some("https") {
        let host = endpoint.uri().host().unwrap_or_default();
        let domain = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        endpoint = endpoint
            .tls_config(tls.tonic(&domain))
            .map_err(|e| format!("cannot set up TLS ({})", error_chain(&e)))?;
    }
    let channel = match tokio::time::timeout(limit, endpoint.connect()).await {
        Err(_) => return Err(no_answer()),
        Ok(Err(e)) => return Err(format!("cannot connect ({})", error_chain(&e))),
        Ok(Ok(channel)) => channel,
    };
    let request = HealthCheckRequest {
        service: service.to_owned(),
    };
    match tokio::time::timeout(limit, HealthClient::new(channel).check(request)).await {
        Err(_) => Err(no_answer()),
        Ok(Err(status)) if status.message().is_empty() => {
            Err(fanout_proto::code_name(status.code()).to_owned())
        }
        Ok(Err(status)) => Err(format!(
            "{}: {}",
            fanout_proto::code_name(status.code()),
            status.message()
        )),
        Ok(Ok(reply)) => Ok(reply.into_inner().status()),
    }
}
