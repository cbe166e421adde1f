//! The loadgen's HTTP/2 connections and the gRPC calls it makes over them, on the workspace's
//! own HTTP/2 client (`fanout_common::http2`, shared with the aggregator).
//!
//! The loadgen shares the machine with the servers it measures, so every microsecond of CPU it
//! spends per call is taken from them. What this does about it, measured with
//! `scripts/bench-raw.sh` and `perf`/`strace` (BENCHMARKS.md §3):
//!
//! 1. **One write per batch of calls.** With each caller a task of its own and the connection
//!    another, a caller that sends a request wakes the connection task, which runs next
//!    (tokio's LIFO slot) and writes that one request. Here the callers of a connection run
//!    *on the connection's task* ([`Conn::beside`]): the answers one socket read brings wake
//!    their callers, each starts its next call, and only then does the connection write them
//!    all, in one `write`, as h2load does.
//! 2. **Little per call.** A request is encoded once per caller ([`Prepared`]) and sent as one
//!    DATA frame; its headers go as HPACK table indexes after the first call; an answer is read
//!    for its `:status` and `grpc-status` and its message, no more (`fanout_common::http2`).

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use fanout_common::grpc;
use fanout_common::http2::{self, Client, Driver, Request};
use fanout_telemetry::propagation;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use http::HeaderMap;
use http::Uri;
use http::uri::Scheme;
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

/// One HTTP/2 connection; clones share it.
#[derive(Debug, Clone)]
pub struct Conn {
    client: Client,
    tasks: mpsc::UnboundedSender<Order>,
}

impl Conn {
    /// Connects to `uri` (`http://host:port`) within `limit` and starts HTTP/2 on it. The
    /// connection gets a task of its own, which also runs what is given to [`Conn::beside`].
    pub async fn open(uri: &Uri, limit: Duration) -> Result<Conn, ConnectError> {
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err("only http:// (plaintext HTTP/2) is supported".into());
        }
        let authority = uri.authority().ok_or("the URL has no host")?;
        let stream = http2::connect(authority, 80, limit).await?;
        let (client, driver) = http2::handshake(stream, authority.as_str());
        let (tasks, inbox) = mpsc::unbounded_channel();
        tokio::spawn(drive(driver, inbox));
        Ok(Conn { client, tasks })
    }

    /// Runs `task` on this connection's task, beside the connection's own reading and writing.
    /// Returns false if the connection's task is gone.
    pub fn beside(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        self.tasks.send(Order::Run(Box::pin(task))).is_ok()
    }

    /// Whether the connection has ended or is closing; calls over it fail at once from then on.
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    /// Drops everything given to [`Conn::beside`] so far, at the task's next turn.
    pub fn stop_beside(&self) {
        let _ = self.tasks.send(Order::StopAll);
    }

    /// Sends `call` and reads its one answer.
    pub async fn unary(&self, call: &Prepared, span: &tracing::Span) -> Result<Bytes, Status> {
        let metadata = propagation::trace_headers(span);
        grpc::unary(&self.client, &call.request(metadata.as_ref()), &call.body).await
    }

    /// Sends `call` and hands each message of the answer to `each` as it arrives; ends with the
    /// call's status.
    pub async fn server_stream(
        &self,
        call: &Prepared,
        span: &tracing::Span,
        each: impl FnMut(Bytes) -> Result<(), Status>,
    ) -> Result<(), Status> {
        let metadata = propagation::trace_headers(span);
        grpc::call(
            &self.client,
            &call.request(metadata.as_ref()),
            &call.body,
            each,
        )
        .await
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
}

/// A request encoded once: its method, `grpc-timeout` and framed message.
#[derive(Debug, Clone)]
pub struct Prepared {
    path: &'static str,
    timeout: Option<Duration>,
    body: Bytes,
}

impl Prepared {
    /// A call of `path` with `message`, encoded once, ready to be sent many times.
    pub fn new(
        path: &'static str,
        message: &impl prost::Message,
        timeout: Option<Duration>,
    ) -> Self {
        Prepared {
            path,
            timeout,
            body: grpc::frame(message),
        }
    }

    fn request<'a>(&self, metadata: Option<&'a HeaderMap>) -> Request<'a> {
        Request {
            path: self.path,
            timeout: self.timeout,
            metadata,
        }
    }
}

/// The connection's task: the HTTP/2 connection and the tasks run beside it.
///
/// Each turn runs the tasks that were woken first and the connection last, so whatever
/// requests the tasks started in this turn leave in one write.
async fn drive(mut connection: Driver, mut inbox: mpsc::UnboundedReceiver<Order>) {
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
