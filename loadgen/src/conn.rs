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
//! The calls themselves are `fanout_common::h2client`'s, shared with the aggregator.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fanout_common::h2client;
pub use fanout_common::h2client::decode;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use h2::client::{Connection, SendRequest};
use http::HeaderMap;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Uri};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::Status;

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
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(PathAndQuery::from_static(path))
            .build()
            .expect("a scheme, an authority and a static path make a URI");
        let head = h2client::head(uri, timeout);
        Prepared {
            uri: head.uri().clone(),
            headers: head.headers().clone(),
            body: h2client::frame(message),
        }
    }

    fn head(&self, call: &Prepared, span: &tracing::Span) -> Request<()> {
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = call.uri.clone();
        *request.headers_mut() = call.headers.clone();
        if !span.is_disabled() {
            fanout_common::propagation::inject_headers(span, request.headers_mut());
        }
        request
    }

    /// Sends `call` and reads its one answer.
    pub async fn unary(&mut self, call: &Prepared, span: &tracing::Span) -> Result<Bytes, Status> {
        let head = self.head(call, span);
        h2client::unary(&mut self.send, head, call.body.clone()).await
    }

    /// Sends `call` and hands each message of the answer to `each` as it arrives; ends with the
    /// call's status.
    pub async fn server_stream(
        &mut self,
        call: &Prepared,
        span: &tracing::Span,
        each: impl FnMut(Bytes) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let head = self.head(call, span);
        h2client::call(&mut self.send, head, call.body.clone(), each).await
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
