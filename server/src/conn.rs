//! One accepted connection as the server sees it: who is at the other end (address, TLS
//! certificate) and whether it has sent a call yet. A connection that has sent none within the
//! first-request timeout is closed: a client that connects and then says nothing (a port
//! scanner, a slowloris, a leaked socket) holds memory and a file descriptor for nothing.
//!
//! The link between the socket and the calls on it is tonic's connect info: tonic puts
//! [`ConnInfo`] into every request's extensions, where [`ConnLayer`] notes the call on the
//! connection's [`Watched`] socket, and puts tonic's own connect info back, so
//! `Request::remote_addr()` and `peer_certs()` work as usual.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::Duration;

use fanout_tls::tokio_rustls::server::TlsStream;
use http::Request;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tonic::transport::server::{Connected, TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

/// What the calls on a connection share with its socket.
#[derive(Debug, Default)]
struct Shared {
    called: AtomicBool,
}

/// A socket whose reads fail once its first-request deadline passes without a call: hyper
/// then drops the connection.
#[derive(Debug)]
pub struct Watched<IO> {
    io: IO,
    shared: Arc<Shared>,
    /// Until the first call.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<IO> Watched<IO> {
    /// `io`, accepted at `accepted`, closed unless a call arrives within `first_request`.
    pub fn new(io: IO, accepted: Instant, first_request: Duration) -> Self {
        Watched {
            io,
            shared: Arc::default(),
            deadline: Some(Box::pin(tokio::time::sleep_until(accepted + first_request))),
        }
    }

    fn info(&self, tcp: TcpConnectInfo, tls: Option<TlsConnectInfo<TcpConnectInfo>>) -> ConnInfo {
        ConnInfo {
            tcp,
            tls,
            shared: self.shared.clone(),
        }
    }
}

/// What tonic hands every request on a [`Watched`] connection.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub tcp: TcpConnectInfo,
    /// The TLS session's facts (the client's certificate under mTLS).
    pub tls: Option<TlsConnectInfo<TcpConnectInfo>>,
    shared: Arc<Shared>,
}

impl Connected for Watched<TcpStream> {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info(self.io.connect_info(), None)
    }
}

impl Connected for Watched<TlsStream<TcpStream>> {
    type ConnectInfo = ConnInfo;
    fn connect_info(&self) -> ConnInfo {
        self.info(
            self.io.get_ref().0.connect_info(),
            Some(self.io.connect_info()),
        )
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.deadline {
            if this.shared.called.load(Relaxed) {
                this.deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!("closing a connection that sent no call in time");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no call within the first-request timeout",
                )));
            }
        }
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Notes each call on its connection (so the first-request timeout stands down) and restores
/// tonic's connect info; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ConnLayer;

impl<S> Layer<S> for ConnLayer {
    type Service = Conn<S>;
    fn layer(&self, inner: S) -> Self::Service {
        Conn { inner }
    }
}

/// The service made by [`ConnLayer`].
#[derive(Debug, Clone)]
pub struct Conn<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Conn<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(info) = req.extensions_mut().remove::<ConnInfo>() {
            info.shared.called.store(true, Relaxed);
            req.extensions_mut().insert(info.tcp);
            if let Some(tls) = info.tls {
                req.extensions_mut().insert(tls);
            }
        }
        self.inner.call(req)
    }
}
