//! The loadgen's HTTP/2 connections and the gRPC calls it makes over them, on the `h2` crate
//! directly (the HTTP/2 implementation under hyper and tonic).
//!
//! Why not tonic's generated clients: the loadgen shares the machine with the servers it
//! measures, so every microsecond of CPU it spends per call is taken from them. Two things
//! cost most, measured with `scripts/bench-raw.sh` and `perf`/`strace` (BENCHMARKS.md §3):
//!
//! 1. **One write per call.** With each caller a task of its own and the connection another,
//!    a caller that sends a request wakes the connection task, which runs next (tokio's LIFO
//!    slot) and writes that one request. Here the callers of a connection run *on the
//!    connection's task* ([`Conn::beside`]): the answers one socket read brings wake their
//!    callers, each starts its next call, and only then does the connection write them all,
//!    in one `writev`, as h2load does.
//! 2. **Layers per call.** tonic's client adds a request encoder and decoder stream and hyper
//!    adds a dispatch channel and a task for the request body. Here a request is encoded once
//!    per caller ([`Prepared`]), sent as one DATA frame, and an answer is read straight off the
//!    stream.
//!
//! What is left is gRPC framing (a 5-byte prefix per message) and reading the status from the
//! trailers, which tonic's own `Status::from_header_map` does.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use h2::client::{Connection, SendRequest};
use h2::{Reason, RecvStream};
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::{Code, Status};

/// Why a connection could not be opened.
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// Work run on a connection's own task.
type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What a connection's task is asked to do.
enum Order {
    /// Run this beside the connection.
    Run(Task),
    /// Drop everything it runs (abandoning their calls).
    StopAll,
}

/// The largest answer the loadgen reads (tonic's default limit too).
const MAX_MESSAGE: usize = 4 << 20;

/// One HTTP/2 connection; clones share it (each clone can have one call starting at a time).
#[derive(Debug, Clone)]
pub struct Conn {
    send: SendRequest<Bytes>,
    scheme: Scheme,
    authority: Authority,
    tasks: mpsc::UnboundedSender<Order>,
    /// Set by the connection's task when the connection has ended (closed by the peer or
    /// broken).
    closed: Arc<AtomicBool>,
}

impl Conn {
    /// Connects to `uri` (`http://host:port`) within `limit` and completes the HTTP/2 handshake.
    /// The connection gets a task of its own, which also runs what is given to [`Conn::beside`].
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
        let stream = tokio::time::timeout(limit, TcpStream::connect((host, port)))
            .await
            .map_err(|_| format!("no connection within {limit:?}"))??;
        stream.set_nodelay(true)?;
        let (send, connection) = tokio::time::timeout(
            limit,
            h2::client::Builder::new()
                .initial_window_size(1 << 20)
                .initial_connection_window_size(4 << 20)
                .handshake::<_, Bytes>(stream),
        )
        .await
        .map_err(|_| format!("no HTTP/2 handshake within {limit:?}"))??;
        let (tasks, inbox) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(connection, inbox, closed.clone()));
        Ok(Conn {
            send,
            scheme: Scheme::HTTP,
            authority,
            tasks,
            closed,
        })
    }

    /// Runs `task` on this connection's task, beside the connection's own reading and writing.
    /// Returns false if the connection's task is gone.
    pub fn beside(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        self.tasks.send(Order::Run(Box::pin(task))).is_ok()
    }

    /// Whether the connection has ended; calls over it fail at once from then on.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Drops everything given to [`Conn::beside`] so far, at the task's next turn.
    pub fn stop_beside(&self) {
        let _ = self.tasks.send(Order::StopAll);
    }

    /// A call of `path` with `message`, encoded once, ready to be sent many times.
    pub fn prepare(
        &self,
        path: &'static str,
        message: &impl prost::Message,
        timeout: Option<Duration>,
    ) -> Prepared {
        let mut body = BytesMut::with_capacity(5 + message.encoded_len());
        body.put_u8(0); // not compressed
        body.put_u32(message.encoded_len() as u32);
        message
            .encode(&mut body)
            .expect("the buffer was sized for the message");
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .expect("a scheme, an authority and a static path make a URI");
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(t) = timeout {
            let value = fanout_common::deadline::format(t);
            headers.insert(
                "grpc-timeout",
                HeaderValue::from_str(&value).expect("digits and a unit"),
            );
        }
        Prepared {
            uri,
            headers,
            body: body.freeze(),
        }
    }

    /// Sends `call` and reads its one answer.
    pub async fn unary(&mut self, call: &Prepared, span: &tracing::Span) -> Result<Bytes, Status> {
        let mut answer = None;
        self.server_stream(call, span, |message| {
            if answer.is_some() {
                return Err(Status::internal(
                    "a unary call was answered with two messages",
                ));
            }
            answer = Some(message);
            Ok(())
        })
        .await?;
        answer.ok_or_else(|| Status::internal("a unary call was answered with no message"))
    }

    /// Sends `call` and hands each message of the answer to `each` as it arrives; ends with the
    /// call's status.
    pub async fn server_stream(
        &mut self,
        call: &Prepared,
        span: &tracing::Span,
        mut each: impl FnMut(Bytes) -> Result<(), Status>,
    ) -> Result<(), Status> {
        std::future::poll_fn(|cx| self.send.poll_ready(cx))
            .await
            .map_err(h2_status)?;
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = call.uri.clone();
        *request.headers_mut() = call.headers.clone();
        if !span.is_disabled() {
            fanout_common::propagation::inject_headers(span, request.headers_mut());
        }
        let (response, mut body) = self.send.send_request(request, false).map_err(h2_status)?;
        body.send_data(call.body.clone(), true).map_err(h2_status)?;
        let response = response.await.map_err(h2_status)?;
        let (head, mut stream) = response.into_parts();
        if head.status != http::StatusCode::OK {
            return Err(http_status(head.status));
        }
        // Trailers-only: an error answered in the headers.
        if let Some(status) = Status::from_header_map(&head.headers) {
            return match status.code() {
                Code::Ok => Ok(()),
                _ => Err(status),
            };
        }
        let mut frames = Frames::default();
        while let Some(data) = stream.data().await {
            let data = data.map_err(h2_status)?;
            let _ = stream.flow_control().release_capacity(data.len());
            frames.push(data);
            while let Some(message) = frames.next()? {
                each(message)?;
            }
        }
        if !frames.is_empty() {
            return Err(Status::internal("the answer ended inside a message"));
        }
        status_of(&mut stream).await
    }

    /// One call of `path` with `message`, its answer decoded: for the few calls the loadgen
    /// makes outside the load (probes).
    pub async fn call<Reply: prost::Message + Default>(
        &mut self,
        path: &'static str,
        message: &impl prost::Message,
        timeout: Option<Duration>,
    ) -> Result<Reply, Status> {
        let call = self.prepare(path, message, timeout);
        let answer = self.unary(&call, &tracing::Span::none()).await?;
        decode(answer)
    }
}

/// A request encoded once: its URI, headers and framed message.
#[derive(Debug, Clone)]
pub struct Prepared {
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

/// Decodes one answer message.
pub fn decode<M: prost::Message + Default>(message: Bytes) -> Result<M, Status> {
    M::decode(message).map_err(|e| Status::internal(format!("cannot decode the answer: {e}")))
}

/// The connection's task: the HTTP/2 connection and the tasks run beside it.
///
/// Each turn runs the tasks that were woken first and the connection last, so whatever
/// requests the tasks started in this turn leave in one write.
async fn drive(
    mut connection: Connection<TcpStream, Bytes>,
    mut inbox: mpsc::UnboundedReceiver<Order>,
    closed: Arc<AtomicBool>,
) {
    let mut tasks = FuturesUnordered::new();
    let mut inbox_open = true;
    let mut connected = true;
    std::future::poll_fn(|cx| {
        while inbox_open {
            match inbox.poll_recv(cx) {
                Poll::Ready(Some(Order::Run(task))) => tasks.push(task),
                Poll::Ready(Some(Order::StopAll)) => tasks.clear(),
                Poll::Ready(None) => inbox_open = false,
                Poll::Pending => break,
            }
        }
        while let Poll::Ready(Some(())) = tasks.poll_next_unpin(cx) {}
        if connected && Pin::new(&mut connection).poll(cx).is_ready() {
            // Closed or broken: its streams have been told, and the tasks see that as
            // errors of their calls.
            connected = false;
            closed.store(true, Relaxed);
            while let Poll::Ready(Some(())) = tasks.poll_next_unpin(cx) {}
        }
        if !connected && !inbox_open && tasks.is_empty() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Splits the bytes of an answer into gRPC messages (a compressed-flag byte, a 4-byte
/// big-endian length, the message).
#[derive(Default)]
struct Frames {
    buffer: BytesMut,
    /// The data frame received last, when nothing was buffered before it: most answers are one
    /// whole message in one frame, taken without a copy.
    whole: Option<Bytes>,
}

impl Frames {
    fn push(&mut self, data: Bytes) {
        if let Some(previous) = self.whole.take() {
            self.buffer.extend_from_slice(&previous);
        }
        if self.buffer.is_empty() {
            self.whole = Some(data);
        } else {
            self.buffer.extend_from_slice(&data);
        }
    }

    fn is_empty(&self) -> bool {
        self.buffer.is_empty() && self.whole.as_ref().is_none_or(Bytes::is_empty)
    }

    /// The next whole message, if there is one.
    fn next(&mut self) -> Result<Option<Bytes>, Status> {
        let available = match &self.whole {
            Some(w) => &w[..],
            None => &self.buffer[..],
        };
        if available.len() < 5 {
            if let Some(w) = self.whole.take() {
                self.buffer.extend_from_slice(&w);
            }
            return Ok(None);
        }
        if available[0] != 0 {
            return Err(Status::internal(
                "the answer is compressed, which the loadgen did not ask for",
            ));
        }
        let len =
            u32::from_be_bytes([available[1], available[2], available[3], available[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(Status::resource_exhausted(format!(
                "an answer of {len} bytes is over the loadgen's limit of {MAX_MESSAGE}"
            )));
        }
        if available.len() < 5 + len {
            if let Some(w) = self.whole.take() {
                self.buffer.extend_from_slice(&w);
            }
            return Ok(None);
        }
        Ok(Some(match &mut self.whole {
            Some(w) => {
                w.advance(5);
                let message = w.split_to(len);
                if w.is_empty() {
                    self.whole = None;
                }
                message
            }
            None => {
                self.buffer.advance(5);
                self.buffer.split_to(len).freeze()
            }
        }))
    }
}

/// The call's status from the trailers.
async fn status_of(stream: &mut RecvStream) -> Result<(), Status> {
    let trailers = stream.trailers().await.map_err(h2_status)?;
    let Some(trailers) = trailers else {
        return Err(Status::internal("the answer ended without trailers"));
    };
    // The common case without building a Status (which copies the trailers).
    if trailers.get("grpc-status").is_some_and(|v| v == "0") {
        return Ok(());
    }
    match Status::from_header_map(&trailers) {
        Some(s) if s.code() == Code::Ok => Ok(()),
        Some(s) => Err(s),
        None => Err(Status::internal("the answer ended without a grpc-status")),
    }
}

/// The gRPC code for an HTTP status other than 200 (the gRPC over HTTP/2 spec's mapping).
fn http_status(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status}"))
}

/// The gRPC code for an HTTP/2 error: the connection or the stream failed, locally or at the
/// peer (as tonic maps them).
fn h2_status(e: h2::Error) -> Status {
    let code = if e.is_io() || e.is_go_away() {
        Code::Unavailable
    } else {
        match e.reason() {
            Some(Reason::REFUSED_STREAM) => Code::Unavailable,
            Some(Reason::CANCEL) => Code::Cancelled,
            Some(Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
            Some(Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
            _ => Code::Internal,
        }
    };
    Status::new(code, format!("HTTP/2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    fn messages(chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, Status> {
        let mut frames = Frames::default();
        let mut out = Vec::new();
        for c in chunks {
            frames.push(Bytes::copy_from_slice(c));
            while let Some(m) = frames.next()? {
                out.push(m.to_vec());
            }
        }
        assert!(frames.is_empty(), "bytes left over");
        Ok(out)
    }

    #[test]
    fn messages_are_cut_out_however_the_bytes_arrive() {
        let mut all = framed(b"one");
        all.extend(framed(b""));
        all.extend(framed(b"three"));
        let want = vec![b"one".to_vec(), vec![], b"three".to_vec()];
        assert_eq!(messages(&[&all]).unwrap(), want, "one frame");
        for cut in 1..all.len() {
            assert_eq!(
                messages(&[&all[..cut], &all[cut..]]).unwrap(),
                want,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = all.iter().map(std::slice::from_ref).collect();
        assert_eq!(messages(&bytes).unwrap(), want, "byte by byte");
    }

    #[test]
    fn compressed_or_oversized_answers_are_errors() {
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        assert_eq!(messages(&[&compressed]).unwrap_err().code(), Code::Internal);
        let huge = [0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            messages(&[&huge]).unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn http_and_h2_failures_map_to_grpc_codes() {
        assert_eq!(
            http_status(http::StatusCode::NOT_FOUND).code(),
            Code::Unimplemented
        );
        assert_eq!(
            http_status(http::StatusCode::SERVICE_UNAVAILABLE).code(),
            Code::Unavailable
        );
        assert_eq!(
            http_status(http::StatusCode::IM_A_TEAPOT).code(),
            Code::Unknown
        );
        assert_eq!(
            h2_status(h2::Error::from(Reason::REFUSED_STREAM)).code(),
            Code::Unavailable
        );
        assert_eq!(
            h2_status(h2::Error::from(Reason::CANCEL)).code(),
            Code::Cancelled
        );
    }
}
