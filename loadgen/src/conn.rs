//! The loadgen's HTTP/2 connections, on the `h2` crate used directly (the HTTP/2
//! implementation under hyper and tonic), and the gRPC calls it makes over them.
//!
//! Why not tonic's generated clients: the loadgen shares the machine with the servers it
//! measures, so every microsecond of CPU it spends per call is taken from them. Two things
//! cost most, measured with `scripts/bench-raw.sh` and `perf`/`strace` (BENCHMARKS.md §3):
//!
//! 1. **One write per call.** With each caller a task of its own and the connection another,
//!    a caller that sends a request wakes the connection task, which runs next (tokio's LIFO
//!    slot) and writes that one request. Here the callers of a connection run *on the
//!    connection's task* ([`Conn::beside`]): the answers one socket read brings wake their
//!    callers, each starts its next call, and only then does `h2` write them all, in one
//!    write, as h2load does.
//! 2. **Layers per call.** tonic's client adds a buffer task, a request encoder and decoder
//!    stream, and hyper a dispatch channel and a task for the request body. Here a request is
//!    encoded once per caller ([`Prepared`]) and sent as one DATA frame, and an answer is cut
//!    into messages straight off the `h2` stream ([`crate::grpc`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fanout_telemetry::propagation;
use fanout_tls::tokio_rustls::TlsConnector;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use h2::client::{Connection, SendRequest};
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::Status;

use crate::grpc;

/// How many times a call the server refused unprocessed (REFUSED_STREAM) is sent, in all, before
/// it counts as UNAVAILABLE.
pub const MAX_ATTEMPTS: u32 = 10;

/// The wait before sending a refused call again as its `attempt`th try: none before the second
/// (a refusal is most often a race with the server's count of the streams that just closed,
/// which one round trip settles), then about 1 ms, doubling up to 128 ms, 10 tries taking a
/// quarter of a second in all. A server that stays at its limit (its threads busy, the calls it
/// finished not yet counted out) gets time to catch up, instead of a refusal per round trip:
/// while one stream waits, others of the connection take the slot its refusal freed, so waits
/// only measured in round trips would be used up in a moment. Jittered (from half to all of
/// it), so that calls refused together do not come back together.
fn retry_pause(attempt: u32) -> Option<Duration> {
    (attempt > 2).then(|| {
        let most = Duration::from_millis(1 << (attempt - 3).min(7));
        most.mul_f64(rand::random_range(0.5..=1.0))
    })
}

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

/// One HTTP/2 connection; clones share it.
#[derive(Debug, Clone)]
pub struct Conn {
    send: SendRequest<Bytes>,
    /// Sent as every request's `:scheme` and `:authority`.
    scheme: Scheme,
    authority: Authority,
    tasks: mpsc::UnboundedSender<Order>,
    /// Set when the connection has ended or is closing (a GOAWAY, or a broken socket): calls
    /// over it fail at once from then on.
    closed: Arc<AtomicBool>,
}

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

impl Conn {
    /// Connects to `uri` (`http://host:port`, or `https://host:port` with `tls`) within
    /// `limit` and starts HTTP/2 on it. The connection gets a task of its own, which also runs
    /// what is given to [`Conn::beside`].
    pub async fn open(
        uri: &Uri,
        limit: Duration,
        tls: Option<&TlsConnector>,
    ) -> Result<Conn, ConnectError> {
        let scheme = uri.scheme().cloned().unwrap_or(Scheme::HTTP);
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err("only http:// and https:// are supported".into());
        }
        let authority = uri.authority().ok_or("the URL has no host")?.clone();
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
            return Conn::start(stream, scheme, authority, limit).await;
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
        Conn::start(stream, scheme, authority, limit).await
    }

    /// Starts HTTP/2 on `io`.
    async fn start<T>(
        io: T,
        scheme: Scheme,
        authority: Authority,
        limit: Duration,
    ) -> Result<Conn, ConnectError>
    where
        T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        // The handshake writes the preface and our SETTINGS; the server's come later.
        let (send, connection) = tokio::time::timeout(limit, builder().handshake::<_, Bytes>(io))
            .await
            .map_err(|_| format!("no HTTP/2 handshake within {limit:?}"))??;
        let (tasks, inbox) = mpsc::unbounded_channel();
        let closed = Arc::new(AtomicBool::new(false));
        tokio::spawn(drive(connection, inbox, closed.clone()));
        Ok(Conn {
            send,
            scheme,
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

    /// Whether the connection has ended or is closing; calls over it fail at once from then on.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Relaxed)
    }

    /// Drops everything given to [`Conn::beside`] so far, at the task's next turn.
    pub fn stop_beside(&self) {
        let _ = self.tasks.send(Order::StopAll);
    }

    /// Sends `call` and reads its one answer.
    pub async fn unary(&self, call: &Prepared, span: &tracing::Span) -> Result<Bytes, Status> {
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
    /// call's status. Dropping the future resets the stream (the server sees the call
    /// cancelled).
    pub async fn server_stream(
        &self,
        call: &Prepared,
        span: &tracing::Span,
        mut each: impl FnMut(Bytes) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let mut attempts = 1;
        let (head, mut stream) = loop {
            match self.send(call, span).await {
                Ok(response) => break response.into_parts(),
                // Refused before any answer, so never processed: sent again, as a gRPC client's
                // transparent retry does (gRFC A6), and still one call (its latency from the
                // first send). Bounded, so a server refusing everything is answered with
                // UNAVAILABLE rather than spun on. The common path pays for none of it: the
                // request was encoded once, and the wait is boxed, kept out of the call's
                // future. A stream above a GOAWAY's last stream id is as safe to send again,
                // but only on another connection, and the loadgen does not reconnect.
                Err(e)
                    if attempts < MAX_ATTEMPTS
                        && grpc::unprocessed(&e) == Some(grpc::Unprocessed::Refused)
                        && !self.is_closed() =>
                {
                    attempts += 1;
                    if let Some(pause) = retry_pause(attempts) {
                        Box::pin(tokio::time::sleep(pause)).await;
                    }
                }
                Err(e) => return Err(self.failed(e)),
            }
        };
        if head.status != http::StatusCode::OK {
            return Err(grpc::http_status(head.status));
        }
        // Trailers-only: the status came in the headers.
        if let Some(status) = grpc::status(&head.headers) {
            return status;
        }
        let mut messages = grpc::Messages::default();
        while let Some(data) = stream.data().await {
            let data = data.map_err(|e| self.failed(e))?;
            // Read, so the window can open again at once.
            let _ = stream.flow_control().release_capacity(data.len());
            messages.push(data);
            while let Some(message) = messages.next_message()? {
                each(message)?;
            }
        }
        if !messages.is_empty() {
            return Err(Status::internal("the answer ended inside a message"));
        }
        match stream.trailers().await.map_err(|e| self.failed(e))? {
            Some(trailers) => grpc::status(&trailers)
                .unwrap_or_else(|| Err(Status::internal("the answer ended without a grpc-status"))),
            None => Err(Status::internal("the answer ended without trailers")),
        }
    }

    /// Sends `call` once, on a stream of its own, and waits for the answer's head.
    ///
    /// Each call sends with a handle of its own: `h2` lets a handle have one request waiting
    /// for a stream, so `poll_ready` on a fresh one passes at once, and the request then waits
    /// in `h2` while the server's SETTINGS_MAX_CONCURRENT_STREAMS are all in use (queued at the
    /// client, never sent past the limit). Only the `Bytes` handle of the body is cloned.
    async fn send(
        &self,
        call: &Prepared,
        span: &tracing::Span,
    ) -> Result<http::Response<h2::RecvStream>, h2::Error> {
        let mut send = self.send.clone();
        std::future::poll_fn(|cx| send.poll_ready(cx)).await?;
        let request = call.request(&self.scheme, &self.authority, span);
        let (response, mut body) = send.send_request(request, false)?;
        let sent = body.send_data(call.body.clone(), true);
        if sent.is_err() {
            // Cannot be sent: the server may have answered and closed the stream already (a
            // trailers-only UNIMPLEMENTED, then RST_STREAM NO_ERROR, in the moment between the
            // two calls above), or refused it. What it said comes first; a stream it left open
            // is reset, so that the wait for its answer ends.
            body.send_reset(h2::Reason::CANCEL);
        }
        match (response.await, sent) {
            (Ok(response), _) => Ok(response),
            (Err(e), Ok(())) => Err(e),
            (Err(e), Err(_)) if e.is_remote() || e.is_io() => Err(e),
            (Err(_), Err(unsent)) => Err(unsent),
        }
    }

    /// One call of `path` with `message`, its answer decoded: for the few calls the loadgen
    /// makes outside the load (probes). Bounded by `timeout` (also sent as `grpc-timeout`), so
    /// a target that never answers is an error, not a hang.
    pub async fn call<Reply: prost::Message + Default>(
        &self,
        path: &'static str,
        message: &impl prost::Message,
        timeout: Duration,
    ) -> Result<Reply, Status> {
        let call = Prepared::new(path, message, Some(timeout));
        let answer = tokio::time::timeout(timeout, self.unary(&call, &tracing::Span::none()))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "no answer within {}",
                    fanout_proto::cli::fmt_duration(timeout)
                ))
            })??;
        grpc::decode(answer)
    }

    /// The status of a call that `e` ended; notes a connection that is closing.
    fn failed(&self, e: h2::Error) -> Status {
        if grpc::ends_connection(&e) {
            self.closed.store(true, Relaxed);
        }
        grpc::h2_status(e)
    }
}

/// A request encoded once: its method, headers (`grpc-timeout` among them) and framed message.
#[derive(Debug, Clone)]
pub struct Prepared {
    path: PathAndQuery,
    headers: HeaderMap,
    body: Bytes,
}

impl Prepared {
    /// A call of `path` with `message`, encoded once, ready to be sent many times; `timeout` is
    /// sent as its `grpc-timeout`.
    pub fn new(
        path: &'static str,
        message: &impl prost::Message,
        timeout: Option<Duration>,
    ) -> Self {
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(t) = timeout {
            let value = fanout_server::deadline::format(t);
            headers.insert(
                "grpc-timeout",
                HeaderValue::from_str(&value).expect("digits and a unit"),
            );
        }
        Prepared {
            path: PathAndQuery::from_static(path),
            headers,
            body: grpc::frame(message),
        }
    }

    /// The request's head for the server at `authority`, with `span`'s trace context when it
    /// is recorded.
    fn request(&self, scheme: &Scheme, authority: &Authority, span: &tracing::Span) -> Request<()> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(scheme.clone());
        uri.authority = Some(authority.clone());
        uri.path_and_query = Some(self.path.clone());
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_parts(uri).expect("a scheme, an authority and a path");
        *request.headers_mut() = self.headers.clone();
        if let Some(trace) = propagation::trace_headers(span) {
            request.headers_mut().extend(trace);
        }
        request
    }
}

/// The connection's task: the HTTP/2 connection and the tasks run beside it.
///
/// Each turn runs the tasks that were woken first and the connection last, so whatever
/// requests the tasks started in this turn leave in one write.
async fn drive<T: AsyncRead + AsyncWrite + Unpin>(
    mut connection: Connection<T, Bytes>,
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
