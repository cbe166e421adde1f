//! What the loadgen's end-to-end tests share: the binary as a user runs it, its JSON report,
//! and [`Recorder`], a fake fanout server that records every request the loadgen sends (and
//! how many it has in flight, and over how many connections), so a test can tell a flag that
//! is honoured from one that is accepted and ignored.
#![allow(dead_code)]

use std::pin::Pin;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_proto::v1::aggregator_server::{Aggregator, AggregatorServer};
use fanout_proto::v1::backend_server::{Backend, BackendServer};
use fanout_proto::v1::{
    AggregateEvent, AggregateReply, AggregateRequest, ClearCacheReply, ClearCacheRequest,
    EndpointStats, FetchReply, FetchRequest, ServerStats, StatsRequest, Summary,
    aggregate_event::Event,
};
use tokio::sync::oneshot;
use tonic::{Request, Response, Status};

/// One test at a time among those that take this: each drives a whole deployment at full speed,
/// and two at once on a 2-core machine would measure each other (a test that panicked while
/// holding it does not stop the others).
pub fn alone() -> std::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// The loadgen binary, with no log filter from the environment.
pub fn loadgen() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.env_remove("RUST_LOG").env("RUST_BACKTRACE", "0");
    cmd
}

/// The run's stdout, after checking it exited 0 (both outputs shown when it did not).
pub fn succeeded(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The run's stderr, after checking it failed.
pub fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "succeeded:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn json(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A fresh folder for one test's files.
pub fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A request as the recorder saw it, with its `grpc-timeout` header.
#[derive(Debug, Clone)]
pub struct Seen<M> {
    pub message: M,
    pub grpc_timeout: Option<String>,
}

/// What the recorder saw.
#[derive(Debug, Default)]
pub struct Log {
    pub aggregates: Mutex<Vec<Seen<AggregateRequest>>>,
    /// AggregateStream calls.
    pub streams: Mutex<Vec<Seen<AggregateRequest>>>,
    pub fetches: Mutex<Vec<Seen<FetchRequest>>>,
    pub in_flight: AtomicUsize,
    /// The most calls in flight at once.
    pub peak: AtomicUsize,
    pub connections: AtomicUsize,
    /// Aggregate calls answered, spread over two pretend endpoints of backend `r` in Stats.
    pub answered: AtomicU64,
}

impl Log {
    pub fn aggregates(&self) -> Vec<Seen<AggregateRequest>> {
        self.aggregates.lock().unwrap().clone()
    }
    pub fn streams(&self) -> Vec<Seen<AggregateRequest>> {
        self.streams.lock().unwrap().clone()
    }
    pub fn fetches(&self) -> Vec<Seen<FetchRequest>> {
        self.fetches.lock().unwrap().clone()
    }
}

/// A fake aggregator and backend in one server on loopback: answers every call after `delay`,
/// records it, and in `Stats` reports a backend `r` with two endpoints, `a` serving three calls
/// in four and `b` one. Stops when dropped.
pub struct Recorder {
    pub url: String,
    pub log: Arc<Log>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Recorder {
    pub fn start(delay: Duration) -> Self {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", std_listener.local_addr().unwrap());
        let log = Arc::new(Log::default());
        let service = Fake {
            delay,
            log: log.clone(),
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let counted = service.log.clone();
                let incoming = futures::stream::unfold(listener, move |listener| {
                    let counted = counted.clone();
                    async move {
                        let accepted = listener.accept().await.map(|(s, _)| s);
                        counted.connections.fetch_add(1, SeqCst);
                        Some((accepted, listener))
                    }
                });
                let _ = tonic::transport::Server::builder()
                    .add_service(AggregatorServer::new(service.clone()))
                    .add_service(BackendServer::new(service))
                    .serve_with_incoming_shutdown(incoming, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Recorder {
            url,
            log,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The loadgen has exited by now; its connections are gone, so this is quick.
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[derive(Clone)]
struct Fake {
    delay: Duration,
    log: Arc<Log>,
}

impl Fake {
    /// Holds a call for the delay, counting it in flight.
    async fn hold(&self) {
        let now = self.log.in_flight.fetch_add(1, SeqCst) + 1;
        self.log.peak.fetch_max(now, SeqCst);
        tokio::time::sleep(self.delay).await;
        self.log.in_flight.fetch_sub(1, SeqCst);
    }
}

fn seen<M: Clone>(request: &Request<M>) -> Seen<M> {
    Seen {
        message: request.get_ref().clone(),
        grpc_timeout: request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    }
}

#[tonic::async_trait]
impl Aggregator for Fake {
    async fn aggregate(
        &self,
        request: Request<AggregateRequest>,
    ) -> Result<Response<AggregateReply>, Status> {
        self.log.aggregates.lock().unwrap().push(seen(&request));
        self.hold().await;
        self.log.answered.fetch_add(1, SeqCst);
        Ok(Response::new(AggregateReply {
            summary: Some(Summary::default()),
            ..Default::default()
        }))
    }

    type AggregateStreamStream =
        Pin<Box<dyn futures::Stream<Item = Result<AggregateEvent, Status>> + Send>>;

    async fn aggregate_stream(
        &self,
        request: Request<AggregateRequest>,
    ) -> Result<Response<Self::AggregateStreamStream>, Status> {
        self.log.streams.lock().unwrap().push(seen(&request));
        self.hold().await;
        let summary = AggregateEvent {
            event: Some(Event::Summary(Summary::default())),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(
            summary,
        )]))))
    }

    async fn clear_cache(
        &self,
        _: Request<ClearCacheRequest>,
    ) -> Result<Response<ClearCacheReply>, Status> {
        Ok(Response::new(ClearCacheReply::default()))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<ServerStats>, Status> {
        let n = self.log.answered.load(SeqCst);
        let endpoint = |address: &str, served| EndpointStats {
            backend: "r".into(),
            address: address.into(),
            served,
            ..Default::default()
        };
        Ok(Response::new(ServerStats {
            name: "recorder".into(),
            endpoints: vec![endpoint("a:1", n - n / 4), endpoint("b:1", n / 4)],
            ..Default::default()
        }))
    }
}

#[tonic::async_trait]
impl Backend for Fake {
    async fn fetch(&self, request: Request<FetchRequest>) -> Result<Response<FetchReply>, Status> {
        self.log.fetches.lock().unwrap().push(seen(&request));
        self.hold().await;
        Ok(Response::new(FetchReply::default()))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<ServerStats>, Status> {
        Ok(Response::new(ServerStats::default()))
    }
}
