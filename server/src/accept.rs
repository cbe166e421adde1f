//! Accepting connections, the stream tonic serves from: each socket wrapped in [`Watched`] (the
//! first-request timeout), and with TLS, handshaken first.
//!
//! TLS handshakes run as tasks of their own, at most [`MAX_HANDSHAKES`] at once, each bounded by
//! the handshake timeout: a client that opens a socket and never finishes its handshake delays
//! no one else's, and a crowd of them is turned away at the door rather than queued. Each
//! handshake takes the [`ServerTls`] config current when its socket was accepted, which is how a
//! rotated certificate reaches new connections and not open ones.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use fanout_tls::ServerTls;
use fanout_tls::tokio_rustls::TlsAcceptor;
use fanout_tls::tokio_rustls::server::TlsStream;
use futures::{Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::TcpIncoming;

use crate::conn::Watched;
use crate::limits::ConnLimits;

/// TLS handshakes in progress at most; connections past it are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// Plaintext connections from `listener`.
pub fn plain(
    listener: TcpListener,
    limits: ConnLimits,
) -> impl Stream<Item = io::Result<Watched<TcpStream>>> {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .map(move |accepted| {
            accepted.map(|s| Watched::new(s, Instant::now(), limits.first_request_timeout))
        })
}

/// TLS connections from `listener`, handshaken with `tls`; see the module docs. The listener
/// closes when the stream is dropped.
pub fn tls(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    limits: ConnLimits,
) -> impl Stream<Item = io::Result<Watched<TlsStream<TcpStream>>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(async move {
        let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
        loop {
            let (tcp, peer) = tokio::select! {
                // tonic dropped the stream: shutting down, stop listening.
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather than spin.
                        tracing::warn!("cannot accept a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let accepted = Instant::now();
            let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                tracing::warn!(%peer, "{MAX_HANDSHAKES} TLS handshakes in progress: connection closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = TlsAcceptor::from(tls.config());
            let tx = tx.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let handshake = acceptor.accept(tcp);
                match tokio::time::timeout_at(accepted + limits.handshake_timeout, handshake).await
                {
                    Ok(Ok(stream)) => {
                        let watched = Watched::new(stream, accepted, limits.first_request_timeout);
                        let _ = tx.send(Ok(watched)).await;
                    }
                    Ok(Err(e)) => tracing::info!(%peer, "TLS handshake failed: {e}"),
                    Err(_) => tracing::info!(
                        %peer,
                        limit = ?limits.handshake_timeout,
                        "TLS handshake not finished in time: connection closed"
                    ),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}
