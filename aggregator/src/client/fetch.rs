//! The bottom of the stack: `fanout.v1.Backend/Fetch` through tonic's generated client, over a
//! tonic [`Channel`] per backend, and how that channel is set up.
//!
//! The channel is what the ecosystem expects of a gRPC client: connected lazily (the aggregator
//! starts while a backend is down) and again after it breaks; a connection attempt bounded to a
//! second (a quick UNAVAILABLE can be retried); hostnames resolved when connecting (compose
//! service names); streams opened only within the server's `max_concurrent_streams` (h2 queues
//! the rest); gzip replies accepted; and keepalive as gRFC A8 asks of a client: HTTP/2 pings only
//! while calls are in flight, never on an idle connection, and when a server answers them with
//! GOAWAY `ENHANCE_YOUR_CALM` (grpcio's `too_many_pings`), pings half as often from then on.
//! An `https://` endpoint is called over TLS (rustls, through tonic's TLS features): the backend
//! must prove it is the host the endpoint was configured with (a name, also sent as SNI, or
//! the IP address), against `--tls-ca` or the system's roots, and is shown the client
//! certificate when there is one. A certificate that does not pass fails that endpoint's calls
//! with UNAVAILABLE and rustls' reason, which becomes the backend's `failure`.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use fanout_proto::v1::backend_client::BackendClient;
use fanout_proto::v1::{FetchReply, FetchRequest};
use fanout_tls::ClientTls;
use futures::future::{BoxFuture, FutureExt};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tower::Service;

use super::call::{Call, Deadline, Param};
use super::error::CallError;

/// How long one connection attempt may take: per-attempt timeouts bound a call anyway, and a
/// quick failure (UNAVAILABLE) can be retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Keepalive pings never get rarer than this, however often a server asks for calm.
const MAX_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(3600);

/// HTTP/2 keepalive of the backend channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keepalive {
    /// With calls in flight, a ping after this long without a frame from the backend...
    pub interval: Duration,
    /// ...and the connection is dropped when the ping goes unanswered this long.
    pub timeout: Duration,
}

/// Calls `Fetch` with the request's message, sending the time left before its deadline as
/// `grpc-timeout` and the current span's trace context as `traceparent`. Clones share the
/// backend's channel.
#[derive(Debug, Clone)]
pub struct Fetch {
    channel: Arc<Shared>,
}

/// The backend's channel, replaced when its keepalive must back off.
#[derive(Debug)]
struct Shared {
    backend: Arc<str>,
    url: String,
    origin: Option<String>,
    tls: ClientTls,
    current: Mutex<Current>,
}

#[derive(Debug, Clone)]
struct Current {
    client: BackendClient<Channel>,
    keepalive: Keepalive,
    /// Counts replacements, so that the calls failing together on one channel replace it once.
    generation: u64,
}

impl Fetch {
    /// A client of the endpoint at `url` (`http://ip:port` or `https://ip:port`), not
    /// connected until the first call; with an `origin` (the URL as configured, naming a host),
    /// requests carry that host, and TLS checks the backend's certificate for it. Must be
    /// called within a tokio runtime: the channel's task runs there.
    pub fn connect(
        backend: Arc<str>,
        url: &str,
        origin: Option<&str>,
        keepalive: Keepalive,
        tls: &ClientTls,
    ) -> Result<Self, tonic::transport::Error> {
        let current = Current {
            client: client(url, origin, keepalive, tls)?,
            keepalive,
            generation: 0,
        };
        Ok(Fetch {
            channel: Arc::new(Shared {
                backend,
                url: url.to_owned(),
                origin: origin.map(str::to_owned),
                tls: tls.clone(),
                current: Mutex::new(current),
            }),
        })
    }

    fn current(&self) -> Current {
        self.channel
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Shared {
    /// The backend answered a ping with GOAWAY `ENHANCE_YOUR_CALM`: a new channel that pings
    /// half as often, unless another call already made one.
    fn calm_down(&self, seen: u64) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.generation != seen {
            return;
        }
        let keepalive = Keepalive {
            interval: (current.keepalive.interval * 2).min(MAX_KEEPALIVE_INTERVAL),
            ..current.keepalive
        };
        match client(&self.url, self.origin.as_deref(), keepalive, &self.tls) {
            Ok(client) => {
                tracing::warn!(
                    backend = &*self.backend,
                    interval = ?keepalive.interval,
                    "the backend sent GOAWAY ENHANCE_YOUR_CALM (too many pings): keepalive pings \
                     are now half as frequent"
                );
                *current = Current {
                    client,
                    keepalive,
                    generation: seen + 1,
                };
            }
            Err(e) => tracing::error!(backend = &*self.backend, "cannot make a new channel: {e}"),
        }
    }
}

/// A generated client over a lazily connected channel to `url`.
fn client(
    url: &str,
    origin: Option<&str>,
    keepalive: Keepalive,
    tls: &ClientTls,
) -> Result<BackendClient<Channel>, tonic::transport::Error> {
    let channel = channel(url, origin, keepalive, tls)?;
    Ok(BackendClient::new(channel).accept_compressed(CompressionEncoding::Gzip))
}

/// A lazily connected channel to the endpoint at `url`, set up as every backend channel is
/// (calls, and the health probes of ejected endpoints, alike).
pub fn channel(
    url: &str,
    origin: Option<&str>,
    keepalive: Keepalive,
    tls: &ClientTls,
) -> Result<Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(url.to_owned())?;
    let origin: Option<http::Uri> = origin.and_then(|o| o.parse().ok());
    if endpoint.uri().scheme_str() == Some("https") {
        // The name the backend's certificate must carry: the configured host when the endpoint
        // is one of its addresses, else the address itself.
        let host = origin
            .as_ref()
            .unwrap_or(endpoint.uri())
            .host()
            .unwrap_or_default();
        let domain = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        endpoint = endpoint.tls_config(tls.tonic(&domain).timeout(CONNECT_TIMEOUT))?;
    }
    if let Some(origin) = origin {
        endpoint = endpoint.origin(origin);
    }
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        // gRFC A8: no pings without calls in flight.
        .keep_alive_while_idle(false)
        .connect_lazy())
}

/// Whether `status` carries a GOAWAY `ENHANCE_YOUR_CALM` the backend sent.
fn told_to_calm_down(status: &tonic::Status) -> bool {
    let mut next = std::error::Error::source(status);
    while let Some(e) = next {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_go_away()
                && h2.is_remote()
                && h2.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM);
        }
        next = e.source();
    }
    false
}

impl Service<Call<FetchRequest>> for Fetch {
    type Response = FetchReply;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<FetchReply, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        // The channel's readiness is awaited by the generated client in the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Call<FetchRequest>) -> Self::Future {
        let Current {
            mut client,
            generation,
            ..
        } = self.current();
        let left = Param::<Deadline>::param(&req).left();
        let mut request = tonic::Request::new(req.message);
        let span = tracing::Span::current();
        if let Some(headers) = fanout_telemetry::propagation::trace_headers(&span) {
            *request.metadata_mut() = MetadataMap::from_headers(headers);
        }
        request.set_timeout(left);
        let channel = self.channel.clone();
        async move {
            match client.fetch(request).await {
                Ok(reply) => Ok(reply.into_inner()),
                Err(status) => {
                    if told_to_calm_down(&status) {
                        channel.calm_down(generation);
                    }
                    Err(CallError::from_status(status))
                }
            }
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests;
