//! The bottom of the stack: `fanout.v1.Backend/Fetch` through tonic's generated client, over a
//! tonic [`Channel`] per backend, and how that channel is set up.
//!
//! The channel is what the ecosystem expects of a gRPC client: connected lazily (the aggregator
//! starts while a backend is down) and again after it breaks; a connection attempt bounded to a
//! second (a quick UNAVAILABLE can be retried); hostnames resolved when connecting (compose
//! service names); HTTP/2 keepalive pings only while calls are in flight (gRFC A8: never on an
//! idle connection, which servers such as grpcio answer with GOAWAY `too_many_pings`); streams
//! opened only within the server's `max_concurrent_streams` (h2 queues the rest); and gzip
//! replies accepted.

use std::task::{Context, Poll};
use std::time::Duration;

use fanout_proto::v1::backend_client::BackendClient;
use fanout_proto::v1::{FetchReply, FetchRequest};
use futures::future::{BoxFuture, FutureExt};
use tonic::codec::CompressionEncoding;
use tonic::metadata::MetadataMap;
use tonic::transport::{Channel, Endpoint};
use tower::Service;

use super::Bounded;
use super::error::CallError;

/// How long one connection attempt may take: per-attempt timeouts bound a call anyway, and a
/// quick failure (UNAVAILABLE) can be retried.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// HTTP/2 keepalive of the backend channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keepalive {
    /// With calls in flight, a ping after this long without a frame from the backend...
    pub interval: Duration,
    /// ...and the connection is dropped when the ping goes unanswered this long.
    pub timeout: Duration,
}

/// A channel to `url` (`http://host:port`), not connected until the first call.
pub fn channel(url: &str, keepalive: Keepalive) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(url.to_owned())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        // gRFC A8: no pings without calls in flight.
        .keep_alive_while_idle(false)
        .connect_lazy())
}

/// Calls `Fetch` with the request's message, sending the time left before its deadline as
/// `grpc-timeout` and the current span's trace context as `traceparent`.
#[derive(Debug, Clone)]
pub struct Fetch {
    client: BackendClient<Channel>,
}

impl Fetch {
    pub fn new(channel: Channel) -> Self {
        Fetch {
            client: BackendClient::new(channel).accept_compressed(CompressionEncoding::Gzip),
        }
    }
}

impl Service<Bounded<FetchRequest>> for Fetch {
    type Response = FetchReply;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<FetchReply, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        // The channel's readiness is awaited by the generated client in the call.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Bounded<FetchRequest>) -> Self::Future {
        let mut client = self.client.clone();
        let left = req.left();
        let mut request = tonic::Request::new(req.message);
        if let Some(headers) =
            fanout_telemetry::propagation::trace_headers(&tracing::Span::current())
        {
            *request.metadata_mut() = MetadataMap::from_headers(headers);
        }
        request.set_timeout(left);
        async move {
            match client.fetch(request).await {
                Ok(reply) => Ok(reply.into_inner()),
                Err(status) => Err(CallError::from_status(status)),
            }
        }
        .boxed()
    }
}
