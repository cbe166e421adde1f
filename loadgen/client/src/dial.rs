//! Opening an HTTP/2 connection: TCP (and TLS for `https://`), then the HTTP/2 handshake with
//! the loadgen's settings.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use fanout_tls::tokio_rustls::TlsConnector;
use h2::client::SendRequest;
use http::Uri;
use http::uri::{Authority, Scheme};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::conn::ConnectError;

/// A connection's own future (its reading and writing), ending with the connection.
pub(crate) type Connection = Pin<Box<dyn Future<Output = ()> + Send>>;

/// How the loadgen's HTTP/2 connections are set up.
fn builder() -> h2::client::Builder {
    let mut builder = h2::client::Builder::new();
    builder
        // Answers are taken off the connection as they arrive and their window given back
        // at once, so large windows hold no more in memory; they spare the server waits for
        // WINDOW_UPDATEs on large answers (an aggregate of many backends' payloads).
        .initial_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        // Until the server's SETTINGS arrive, `h2` assumes it takes any number of streams, so
        // a run starting a hundred callers on one connection would flood a server allowing
        // fewer (grpcio resets the streams beyond its limit). Open at most 100 until then, the
        // least RFC 9113 asks servers to allow (and hyper's default); more wait in `h2`.
        .initial_max_send_streams(100)
        // The loadgen takes no pushes.
        .enable_push(false);
    builder
}

/// The scheme and authority every request to `uri` carries.
pub(crate) fn parts(uri: &Uri) -> Result<(Scheme, Authority), ConnectError> {
    let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err("only http:// and https:// are supported".into());
    }
    let authority = uri.authority().ok_or("the URL has no host")?.clone();
    Ok((scheme, authority))
}

/// An HTTP/2 connection to `uri` within `limit` (TLS for `https://`): its handle, and its own
/// future, to be driven.
pub(crate) async fn connect(
    uri: &Uri,
    limit: Duration,
    tls: Option<&TlsConnector>,
) -> Result<(SendRequest<Bytes>, Connection), ConnectError> {
    let (scheme, authority) = parts(uri)?;
    // `[::1]` is a URL's way to write an IPv6 address; the socket wants it bare.
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == Scheme::HTTPS { 443 } else { 80 });
    let stream = tokio::time::timeout(limit, TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("no connection within {limit:?}"))??;
    // Requests are small and each batch is one write: don't let Nagle hold them back.
    stream.set_nodelay(true)?;
    if scheme == Scheme::HTTP {
        return handshake(stream, limit).await;
    }
    // TLS (rustls): the server must prove it is `host`, and agree to speak HTTP/2.
    let tls = tls.ok_or("https:// needs TLS settings")?;
    let name = fanout_tls::client::server_name(authority.host())?;
    let stream = tokio::time::timeout(limit, tls.connect(name, stream))
        .await
        .map_err(|_| format!("no TLS handshake within {limit:?}"))??;
    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
        return Err("the server did not agree to HTTP/2 (ALPN h2) over TLS".into());
    }
    handshake(stream, limit).await
}

/// Starts HTTP/2 on `io`.
async fn handshake<T>(
    io: T,
    limit: Duration,
) -> Result<(SendRequest<Bytes>, Connection), ConnectError>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The handshake writes the preface and our SETTINGS; the server's come later.
    let (send, connection) = tokio::time::timeout(limit, builder().handshake::<_, Bytes>(io))
        .await
        .map_err(|_| format!("no HTTP/2 handshake within {limit:?}"))??;
    // How the connection ended is what its streams were told.
    Ok((
        send,
        Box::pin(async move {
            let _ = connection.await;
        }),
    ))
}
