//! Serving a tonic service the way both fanout servers do: health and reflection beside it,
//! `x-process-time` on every response, the runtime-lag monitor running, TLS when configured
//! (its certificate re-read when the files change or on SIGHUP), each connection held to
//! [`ConnLimits`], and on shutdown: health goes NOT_SERVING, the listener closes, in-flight
//! calls get a grace period to finish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use fanout_tls::{ServerTls, ServerTlsFiles};
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic_health::ServingStatus;

use crate::accept;
use crate::conn::ConnLayer;
use crate::counters::Counters;
use crate::lag::LagMonitor;
use crate::limits::ConnLimits;
use crate::metrics::Metrics;
use crate::process_time::ProcessTimeLayer;

/// Why a server stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot build the reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error("cannot start the runtime-lag monitor: {0}")]
    LagMonitor(std::io::Error),
    #[error("--metrics-listen: cannot listen on {addr}: {source}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// A TLS file of ours is unusable; the error names the flag, the file and the problem.
    #[error("{0}")]
    Tls(fanout_tls::FileError),
}

impl From<fanout_tls::FileError> for ServeError {
    fn from(e: fanout_tls::FileError) -> Self {
        ServeError::Tls(e)
    }
}

/// The grace period both servers give in-flight calls by default (`--grace-period`).
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// How a server is run; everything but the service itself.
#[derive(Debug, Clone)]
pub struct Server {
    /// The gRPC service's full name (`fanout.v1.Backend`), reported by health alongside "".
    pub service_name: &'static str,
    /// Counters the lag monitor adds its stalls to.
    pub counters: Arc<Counters>,
    /// After a shutdown signal, how long to keep serving with health NOT_SERVING before the
    /// listener closes (time for load balancers to notice).
    pub drain_delay: Duration,
    /// How long in-flight calls may take to finish once the listener has closed.
    pub grace: Duration,
    /// Serve TLS with these files (plaintext without).
    pub tls: Option<ServerTlsFiles>,
    /// What one connection may do.
    pub limits: ConnLimits,
    /// Serve Prometheus metrics at `/metrics` on this address (`--metrics-listen`), and record
    /// the server's calls; off without.
    pub metrics: Option<(std::net::SocketAddr, Metrics)>,
}

impl Server {
    /// Serves `routes` (plus health and reflection) on `listener` until `shutdown` resolves, then
    /// drains. Returns when the drain is over or the grace period has run out.
    pub async fn serve(
        self,
        routes: Routes,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServeError> {
        // Our own files first: a bad certificate stops the server before it serves anything.
        let tls = self.tls.clone().map(ServerTls::load).transpose()?;
        let (calls, _metrics) = match &self.metrics {
            None => (None, None),
            Some((addr, metrics)) => {
                let listener =
                    TcpListener::bind(addr)
                        .await
                        .map_err(|source| ServeError::MetricsListen {
                            addr: *addr,
                            source,
                        })?;
                let at = listener.local_addr().unwrap_or(*addr);
                tracing::info!(addr = %at, "serving metrics at /metrics");
                let task = tokio::spawn(crate::metrics::serve(listener, metrics.registry.clone()));
                (Some(metrics.calls.clone()), Some(AbortOnDrop(task)))
            }
        };
        let (mut health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(self.service_name, ServingStatus::Serving)
            .await;

        // grpcurl 1.8.x speaks only v1alpha reflection; newer tools speak v1. Serve both.
        // List only what this server serves (the descriptor set holds both fanout services).
        let reflection = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(fanout_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
                .with_service_name(self.service_name)
                .with_service_name("grpc.health.v1.Health")
                .with_service_name("grpc.reflection.v1.ServerReflection")
                .with_service_name("grpc.reflection.v1alpha.ServerReflection")
        };
        let routes = routes
            .add_service(health_service)
            .add_service(reflection().build_v1()?)
            .add_service(reflection().build_v1alpha()?);

        let _monitor = LagMonitor::start(tokio::runtime::Handle::current(), self.counters)
            .map_err(ServeError::LagMonitor)?;

        let addr = listener
            .local_addr()
            .map_or_else(|e| format!("unknown address ({e})"), |a| a.to_string());
        let limits = self.limits;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let stop = async {
            let _ = stop_rx.await;
        };
        let router = tonic::transport::Server::builder()
            // Hostile or broken clients: each connection gets so many streams, so large a header
            // list, so many cancelled-before-taken streams (see crate::limits), and is pinged
            // when silent, so a peer that vanished without a FIN is noticed and its connection
            // (and any calls on it) released.
            .max_concurrent_streams(limits.max_concurrent_streams)
            .http2_max_header_list_size(limits.max_header_list_size)
            .http2_max_pending_accept_reset_streams(Some(limits.max_pending_resets))
            .http2_keepalive_interval(Some(limits.ping_interval))
            .http2_keepalive_timeout(Some(limits.ping_timeout))
            // A span per call, continuing the caller's trace.
            .trace_fn(fanout_telemetry::propagation::server_span)
            // First: a call stands the connection's first-request timeout down.
            .layer(ConnLayer)
            .layer(ProcessTimeLayer::recording(calls))
            .add_routes(routes);
        let server: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> =
            match &tls {
                None => Box::pin(
                    router.serve_with_incoming_shutdown(accept::plain(listener, limits), stop),
                ),
                Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                    accept::tls(listener, tls.clone(), limits),
                    stop,
                )),
            };
        // New certificates, when the files change or on SIGHUP, for new connections.
        let _watch = tls
            .as_ref()
            .map(|tls| AbortOnDrop(tls.watch(fanout_tls::server::DEFAULT_CHECK_INTERVAL, true)));
        let tls_mode = match &tls {
            None => "off",
            Some(t) if t.mutual() => "mutual",
            Some(_) => "on",
        };
        tokio::pin!(server);
        tracing::info!(%addr, service = self.service_name, tls = tls_mode, "serving");

        tokio::select! {
            res = &mut server => return res.map_err(Into::into),
            () = shutdown => {}
        }

        // Tell health checkers first; keep serving for the drain delay so load balancers can
        // stop sending calls here; then stop taking calls and let the running ones finish.
        tracing::info!(
            drain_delay = ?self.drain_delay,
            grace = ?self.grace,
            "shutting down: health NOT_SERVING, then draining in-flight calls"
        );
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        health
            .set_service_status(self.service_name, ServingStatus::NotServing)
            .await;
        if !self.drain_delay.is_zero() {
            tokio::select! {
                res = &mut server => return res.map_err(Into::into),
                () = tokio::time::sleep(self.drain_delay) => {}
            }
        }
        // Open Health/Watch streams never end by themselves (the reporter keeps their senders):
        // having told them NOT_SERVING, drop the statuses so they end and do not hold up the drain.
        health.clear_service_status("").await;
        health.clear_service_status(self.service_name).await;
        let _ = stop_tx.send(());
        match tokio::time::timeout(self.grace, server).await {
            Ok(res) => {
                tracing::info!("drained; stopped");
                res.map_err(Into::into)
            }
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "grace period over with calls still in flight; abandoning them");
                Ok(())
            }
        }
    }
}

/// Ends a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
