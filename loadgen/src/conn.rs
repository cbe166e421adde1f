//! The loadgen's HTTP/2 connections: hyper's own client connection under tonic's generated
//! clients, without the request buffer tonic's `Channel` puts in front of it.
//!
//! A `Channel` hands every call to a worker task through a queue before hyper sees it: one
//! more task wake-up and hand-off per call. A load generator that spends that on every call
//! takes CPU from the server it measures (both share the machine), so here a call goes
//! straight to hyper's connection handle. `scripts/bench-raw.sh` measures the difference
//! against h2load; BENCHMARKS.md has the figures.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tonic::body::Body;

/// One HTTP/2 connection; clones share it.
#[derive(Debug, Clone)]
pub struct Conn {
    send: SendRequest<Body>,
    scheme: Scheme,
    authority: Authority,
}

/// Why a connection could not be opened.
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

impl Conn {
    /// Connects to `uri` (`http://host:port`) within `limit` and completes the HTTP/2 handshake.
    pub async fn open(uri: &Uri, limit: Duration) -> Result<Conn, ConnectError> {
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err("only http:// (plaintext HTTP/2) is supported".into());
        }
        let authority = uri.authority().ok_or("the URL has no host")?.clone();
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let stream = tokio::time::timeout(limit, tokio::net::TcpStream::connect((host, port)))
            .await
            .map_err(|_| format!("no connection within {limit:?}"))??;
        stream.set_nodelay(true)?;
        let (send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .handshake(TokioIo::new(stream))
            .await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Conn {
            send,
            scheme: Scheme::HTTP,
            authority,
        })
    }
}

impl tower::Service<Request<Body>> for Conn {
    type Response = Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Incoming>, hyper::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), hyper::Error>> {
        self.send.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        // tonic's generated clients set only the path; HTTP/2 needs the scheme and authority.
        let mut parts = req.uri().clone().into_parts();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
        Box::pin(self.send.send_request(req))
    }
}
