//! A raw HTTP/2 client on the `h2` crate (the HTTP/2 implementation under tonic and hyper),
//! for tests that must control what goes on the wire: how many streams, which headers, when a
//! stream is reset, what bytes a message holds. gRPC over it is a few lines: a POST with
//! `content-type: application/grpc`, each message behind a 5-byte prefix, the status in the
//! trailers (or, for an answer with no message, in the headers).

use std::net::SocketAddr;

use bytes::{BufMut, Bytes, BytesMut};
use fanout_tls::tokio_rustls::TlsConnector;
use h2::client::SendRequest;
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// One HTTP/2 connection: a handle to open streams on, and the task driving the connection,
/// which ends with the connection (with the error that ended it, a GOAWAY among them).
pub struct RawConn {
    pub send: SendRequest<Bytes>,
    pub driver: JoinHandle<Result<(), h2::Error>>,
}

/// Opens a plaintext HTTP/2 connection to `addr`.
pub async fn connect(addr: SocketAddr) -> RawConn {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    start(tcp).await
}

/// Opens an HTTP/2 connection over TLS to `addr`, checking the server is `name`.
pub async fn connect_tls(addr: SocketAddr, tls: &TlsConnector, name: &str) -> RawConn {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    tcp.set_nodelay(true).unwrap();
    let name = fanout_tls::client::server_name(name).unwrap();
    let stream = tls.connect(name, tcp).await.expect("TLS handshake");
    start(stream).await
}

async fn start<T: AsyncRead + AsyncWrite + Unpin + Send + 'static>(io: T) -> RawConn {
    let (send, connection) = h2::client::Builder::new()
        .handshake::<_, Bytes>(io)
        .await
        .expect("HTTP/2 handshake");
    let driver = tokio::spawn(connection);
    let send = send.ready().await.expect("connection ready");
    RawConn { send, driver }
}

/// The head of a gRPC call of `path` (e.g. `/fanout.v1.Backend/Fetch`).
pub fn grpc_head(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://test{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .unwrap()
}

/// `message` behind gRPC's 5-byte prefix (uncompressed, its length).
pub fn framed(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// A protobuf message, encoded and framed.
pub fn encoded(message: &impl prost::Message) -> Bytes {
    framed(&message.encode_to_vec())
}

/// How a call on a raw connection ended.
#[derive(Debug)]
pub enum Ended {
    /// With a gRPC status (0 = OK) and message, and the answer's bytes before it.
    Status {
        code: i32,
        message: String,
        body: Bytes,
    },
    /// With an HTTP status other than 200.
    Http(http::StatusCode),
    /// The stream was reset or the connection failed.
    Reset(h2::Error),
}

impl Ended {
    pub fn code(&self) -> Option<i32> {
        match self {
            Ended::Status { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Sends `head` with `body` (ending the stream) on `send` and reads the whole answer.
pub async fn call(send: &SendRequest<Bytes>, head: Request<()>, body: Bytes) -> Ended {
    let mut send = match send.clone().ready().await {
        Ok(s) => s,
        Err(e) => return Ended::Reset(e),
    };
    let (response, mut stream) = match send.send_request(head, false) {
        Ok(r) => r,
        Err(e) => return Ended::Reset(e),
    };
    if let Err(e) = stream.send_data(body, true) {
        return Ended::Reset(e);
    }
    let response = match response.await {
        Ok(r) => r,
        Err(e) => return Ended::Reset(e),
    };
    let (head, mut recv) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Ended::Http(head.status);
    }
    let status = |h: &http::HeaderMap| {
        h.get("grpc-status")
            .and_then(|v| v.to_str().ok()?.parse::<i32>().ok())
            .map(|code| {
                let message = h
                    .get("grpc-message")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (code, message)
            })
    };
    if let Some((code, message)) = status(&head.headers) {
        return Ended::Status {
            code,
            message,
            body: Bytes::new(),
        };
    }
    let mut body = BytesMut::new();
    while let Some(data) = recv.data().await {
        match data {
            Ok(d) => {
                let _ = recv.flow_control().release_capacity(d.len());
                body.extend_from_slice(&d);
            }
            Err(e) => return Ended::Reset(e),
        }
    }
    match recv.trailers().await {
        Ok(Some(t)) => match status(&t) {
            Some((code, message)) => Ended::Status {
                code,
                message,
                body: body.freeze(),
            },
            None => Ended::Http(http::StatusCode::OK),
        },
        Ok(None) => Ended::Http(http::StatusCode::OK),
        Err(e) => Ended::Reset(e),
    }
}
