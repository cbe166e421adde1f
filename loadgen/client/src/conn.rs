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
//!
//! A [`Conn`] behaves as a gRPC client's channel does towards servers nobody here wrote: a
//! stream the server refused unprocessed is sent again (gRFC A6's transparent retry), and when
//! the connection ends (a GOAWAY, say from a server's maximum connection age, or a broken
//! socket) the next call connects again, one connect at a time and paced when connecting fails,
//! while the old connection finishes the calls it still carries. The calls a GOAWAY left
//! unprocessed are sent again on the new connection.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use fanout_tls::tokio_rustls::TlsConnector;
use h2::client::SendRequest;
use http::Uri;
use http::uri::{Authority, Scheme};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;
use tonic::Status;

use crate::dial::{connect, parts};
use crate::grpc;
pub use crate::prepared::Prepared;
use crate::task::{Order, drive, drives};

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

/// After connecting again failed, the calls of the next this long fail at once (UNAVAILABLE,
/// with the connect's error) rather than each trying: gRPC's connection backoff, shortened
/// (gRPC starts at 1 s) so that a run against a server that went away still ends on time.
const RECONNECT_PAUSE: Duration = Duration::from_millis(100);

/// Why a connection could not be opened.
pub type ConnectError = Box<dyn std::error::Error + Send + Sync>;

/// One HTTP/2 connection to a target, opened again when it ends; clones share it.
#[derive(Debug, Clone)]
pub struct Conn {
    link: Arc<Link>,
    /// Sent as every request's `:scheme` and `:authority`.
    scheme: Scheme,
    authority: Authority,
    tasks: mpsc::UnboundedSender<Order>,
}

/// The connection now, and how to open it again.
#[derive(Debug)]
pub(crate) struct Link {
    /// The handle of the connection now; replaced when it is opened again.
    send: RwLock<SendRequest<Bytes>>,
    /// Which connection that is (0 for the first).
    pub(crate) generation: AtomicU64,
    /// Set when the connection now has ended or is closing (a GOAWAY, or a broken socket): the
    /// next call opens it again.
    pub(crate) closed: AtomicBool,
    /// Held while connecting again: one connect at a time.
    reopen: Mutex<Reopen>,
}

struct Reopen {
    uri: Uri,
    limit: Duration,
    tls: Option<TlsConnector>,
    /// The last failed connect: when, and why.
    failed: Option<(Instant, String)>,
}

impl std::fmt::Debug for Reopen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reopen")
            .field("uri", &self.uri)
            .field("tls", &self.tls.is_some())
            .field("failed", &self.failed)
            .finish()
    }
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
        let (scheme, authority) = parts(uri)?;
        let (send, connection) = connect(uri, limit, tls).await?;
        let (tasks, inbox) = mpsc::unbounded_channel();
        let link = Arc::new(Link {
            send: RwLock::new(send),
            generation: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            reopen: Mutex::new(Reopen {
                uri: uri.clone(),
                limit,
                tls: tls.cloned(),
                failed: None,
            }),
        });
        tokio::spawn(drive(drives(connection, 0), inbox, link.clone()));
        Ok(Conn {
            link,
            scheme,
            authority,
            tasks,
        })
    }

    /// Opens the connection again if it has ended (unless another call just did); after a
    /// failed connect, fails at once for [`RECONNECT_PAUSE`].
    async fn reconnect(&self) -> Result<(), Status> {
        let seen = self.link.generation.load(Relaxed);
        let mut reopen = self.link.reopen.lock().await;
        if self.link.generation.load(Relaxed) != seen || !self.is_closed() {
            return Ok(());
        }
        if let Some((at, why)) = &reopen.failed
            && at.elapsed() < RECONNECT_PAUSE
        {
            return Err(Status::unavailable(format!(
                "the connection ended, and connecting again failed: {why}"
            )));
        }
        match connect(&reopen.uri, reopen.limit, reopen.tls.as_ref()).await {
            Ok((send, connection)) => {
                let generation = seen + 1;
                let _ = self
                    .tasks
                    .send(Order::Connection(drives(connection, generation)));
                {
                    // The handle and its generation change together (`send` reads both).
                    let mut current = self.link.send.write().unwrap_or_else(|p| p.into_inner());
                    *current = send;
                    self.link.generation.store(generation, Relaxed);
                }
                self.link.closed.store(false, Relaxed);
                reopen.failed = None;
                Ok(())
            }
            Err(e) => {
                let why = e.to_string();
                reopen.failed = Some((Instant::now(), why.clone()));
                Err(Status::unavailable(format!(
                    "the connection ended, and connecting again failed: {why}"
                )))
            }
        }
    }

    /// Runs `task` on this connection's task, beside the connection's own reading and writing.
    /// Returns false if the connection's task is gone.
    pub fn beside(&self, task: impl Future<Output = ()> + Send + 'static) -> bool {
        self.tasks.send(Order::Run(Box::pin(task))).is_ok()
    }

    /// Whether the connection has ended or is closing, and is not open again yet.
    pub fn is_closed(&self) -> bool {
        self.link.closed.load(Relaxed)
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
        let (generation, (head, mut stream)) = loop {
            if self.is_closed() {
                Box::pin(self.reconnect()).await?;
            }
            let (generation, sent) = self.send(call, span).await;
            match sent {
                Ok(response) => break (generation, response.into_parts()),
                // Never processed, so sent again, as a gRPC client's transparent retry does
                // (gRFC A6), and still one call (its latency from the first send): refused
                // before any answer (on this connection, after a pause), or above the last
                // stream id of the server's GOAWAY (on the connection that replaces it).
                // Bounded, so a server refusing everything is answered with UNAVAILABLE rather
                // than spun on. The common path pays for none of it: the request was encoded
                // once, and the waits are boxed, kept out of the call's future.
                Err(e) if attempts < MAX_ATTEMPTS && grpc::unprocessed(&e).is_some() => {
                    attempts += 1;
                    match grpc::unprocessed(&e) {
                        Some(grpc::Unprocessed::Refused) if !self.is_closed() => {
                            if let Some(pause) = retry_pause(attempts) {
                                Box::pin(tokio::time::sleep(pause)).await;
                            }
                        }
                        // The connection is closing: the loop's top opens another.
                        _ => self.note(&e, generation),
                    }
                }
                Err(e) => return Err(self.failed(e, generation)),
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
            let data = data.map_err(|e| self.failed(e, generation))?;
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
        match stream
            .trailers()
            .await
            .map_err(|e| self.failed(e, generation))?
        {
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
    /// Returns which connection it went over (its generation) with the outcome.
    async fn send(
        &self,
        call: &Prepared,
        span: &tracing::Span,
    ) -> (u64, Result<http::Response<h2::RecvStream>, h2::Error>) {
        let (mut send, generation) = {
            let current = self.link.send.read().unwrap_or_else(|p| p.into_inner());
            (current.clone(), self.link.generation.load(Relaxed))
        };
        (generation, self.send_on(&mut send, call, span).await)
    }

    /// [`Conn::send`] with the handle it read.
    async fn send_on(
        &self,
        send: &mut SendRequest<Bytes>,
        call: &Prepared,
        span: &tracing::Span,
    ) -> Result<http::Response<h2::RecvStream>, h2::Error> {
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

    /// The status of a call that `e` ended on connection `generation`; notes a connection
    /// that is closing.
    fn failed(&self, e: h2::Error, generation: u64) -> Status {
        self.note(&e, generation);
        grpc::h2_status(e)
    }

    /// Notes that connection `generation` is closing if `e` says so, unless another has
    /// replaced it already (a call still finishing on an old connection says nothing of the
    /// new one).
    fn note(&self, e: &h2::Error, generation: u64) {
        if grpc::ends_connection(e) && self.link.generation.load(Relaxed) == generation {
            self.link.closed.store(true, Relaxed);
        }
    }
}
