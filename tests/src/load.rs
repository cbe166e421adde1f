//! Load and fault helpers for the reliability tests: server processes on addresses chosen in
//! advance (so one can be restarted where it was), a SIGSTOP undone on drop, a listener that
//! accepts and never answers, RSS, percentiles, and bounded closed- and open-loop load.
//!
//! Everything is bounded: load loops stop by themselves after a hard limit even if a test
//! forgets to stop them, and a stopped process is continued when its guard drops.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fanout_proto::v1::aggregator_client::AggregatorClient;
use tokio::task::JoinHandle;
use tonic::transport::{Channel, Endpoint};

use crate::process::Process;

/// A loopback address nothing listens on right now: bind port 0, note the port, release it.
/// The port stays free for the test's use in practice (the kernel hands out ephemeral ports
/// round-robin, so it is not given to someone else at once).
pub fn free_addr() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local address");
    drop(listener);
    addr.to_string()
}

/// A `backend` process named `name` listening on `listen` (`127.0.0.1:0` or a fixed address),
/// with `args` added (`--latency`, `--mode`, ...).
pub fn backend_process(name: &str, listen: &str, args: &[&str]) -> Process {
    let mut all = vec!["--listen", listen, "--name", name];
    all.extend_from_slice(args);
    Process::start("backend", &all, &[])
}

/// An `aggregator` process on a free port over `backends` (`(name, url)`), with `args` added,
/// and fixed concurrency limits unless `args` set them.
pub fn aggregator_process(backends: &[(&str, String)], args: &[&str]) -> Process {
    let specs: Vec<String> = backends
        .iter()
        .map(|(name, url)| format!("--backend={name}={url}"))
        .collect();
    let mut all = vec!["--listen", "127.0.0.1:0"];
    all.extend(specs.iter().map(String::as_str));
    // Fixed limits unless the test sets its own (see `aggregator_config`).
    if !args.iter().any(|a| a.starts_with("--backend-concurrency")) {
        all.extend(["--backend-concurrency", "100"]);
    }
    if !args.iter().any(|a| a.starts_with("--max-in-flight")) {
        all.extend(["--max-in-flight", "1000"]);
    }
    all.extend_from_slice(args);
    Process::start("aggregator", &all, &[])
}

/// A process stopped with SIGSTOP until this guard drops (then SIGCONT), so a failing test
/// never leaves a stopped process behind.
pub struct Stopped<'a>(&'a Process);

impl<'a> Stopped<'a> {
    pub fn new(process: &'a Process) -> Self {
        process.signal("STOP");
        Stopped(process)
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        // Not `signal`: that asserts, and a panic while unwinding would abort.
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0.pid().to_string()])
            .status();
    }
}

/// A TCP listener that accepts every connection and never answers (nor reads): a backend whose
/// host is up but whose server is wedged. Connections are held until it drops.
pub struct SilentListener {
    pub addr: String,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl SilentListener {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let accepted = Arc::new(AtomicU64::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                held.push(socket);
            }
        });
        SilentListener {
            addr,
            accepted,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for SilentListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The resident set size of process `pid`, in KiB (`VmRSS` in /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The `q` quantile (0 to 1) of `samples`, by the nearest-rank method; zero when empty.
pub fn percentile(samples: &[Duration], q: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds, for messages.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A small, fast, seedable generator (xorshift64*), so random test choices can be repeated from
/// the seed printed in a failure.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `lo..=hi`.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let span = hi.saturating_sub(lo).as_micros() as u64;
        lo + Duration::from_micros(self.below(span + 1))
    }
}

/// A seed from the clock, printed so a failing run can be repeated.
pub fn seed() -> u64 {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64);
    println!("seed {seed}");
    seed
}

/// `n` aggregator clients, each on its own HTTP/2 connection (load from one connection is
/// serialized by that connection's task; real callers come from many).
pub async fn aggregator_clients(url: &str, n: usize) -> Vec<AggregatorClient<Channel>> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        let channel = Endpoint::from_shared(url.to_owned())
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .expect("connect to aggregator");
        clients.push(AggregatorClient::new(channel));
    }
    clients
}

/// How long load waits for its calls to end once it stops making new ones, before it fails the
/// test instead of hanging it.
pub const STOP_LIMIT: Duration = Duration::from_secs(20);

/// `call` bounded by `limit` on the client side, as a caller that gives up would: a hang
/// becomes a `DEADLINE_EXCEEDED` "client gave up" error instead of a stuck test.
pub async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(limit, call).await.unwrap_or_else(|_| {
        Err(tonic::Status::deadline_exceeded(format!(
            "client gave up after {limit:?}"
        )))
    })
}

/// `callers` callers looping `Aggregate` with `deadline_ms` through `client` until the load is
/// finished or `limit` passes; each call also bounded on the client side (5 s), so a hanging
/// call fails the test instead of hanging it.
pub fn aggregate_load(
    callers: usize,
    limit: Duration,
    client: AggregatorClient<Channel>,
    deadline: Duration,
) -> Load<Result<fanout_proto::v1::AggregateReply, tonic::Status>> {
    Load::start(callers, limit, move |caller, i| {
        let mut c = client.clone();
        async move {
            let call = c.aggregate(fanout_proto::v1::AggregateRequest {
                query: format!("c{caller}-{i}"),
                deadline_ms: Some(deadline.as_millis() as u32),
                ..Default::default()
            });
            bounded(Duration::from_secs(5), call)
                .await
                .map(tonic::Response::into_inner)
        }
    })
}

/// One call made by a load loop: when it started, how long it took, what it returned.
#[derive(Debug, Clone)]
pub struct Sample<T> {
    pub caller: usize,
    pub start: Instant,
    pub took: Duration,
    pub value: T,
}

impl<T> Sample<T> {
    pub fn end(&self) -> Instant {
        self.start + self.took
    }
}

/// Closed-loop load running in the background: `callers` tasks, each making one call after
/// another until [`Load::finish`] or the hard `limit`, whichever comes first.
pub struct Load<T> {
    stop: Arc<AtomicBool>,
    tasks: Vec<JoinHandle<Vec<Sample<T>>>>,
}

impl<T: Send + 'static> Load<T> {
    /// Starts `callers` loops of `call(caller, iteration)`.
    pub fn start<F, Fut>(callers: usize, limit: Duration, call: F) -> Self
    where
        F: Fn(usize, u64) -> Fut + Clone + Send + 'static,
        Fut: Future<Output = T> + Send,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let hard_stop = Instant::now() + limit;
        let tasks = (0..callers)
            .map(|caller| {
                let (stop, call) = (stop.clone(), call.clone());
                tokio::spawn(async move {
                    let mut samples = Vec::new();
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < hard_stop {
                        let start = Instant::now();
                        let value = call(caller, i).await;
                        samples.push(Sample {
                            caller,
                            start,
                            took: start.elapsed(),
                            value,
                        });
                        i += 1;
                    }
                    samples
                })
            })
            .collect();
        Load { stop, tasks }
    }

    /// Stops the loops (each finishes the call it is making) and returns every call's sample,
    /// in start order. Panics if a loop does not stop within [`STOP_LIMIT`] (a call hangs).
    pub async fn finish(self) -> Vec<Sample<T>> {
        self.stop.store(true, Ordering::Relaxed);
        let mut all = Vec::new();
        let limit = tokio::time::Instant::now() + STOP_LIMIT;
        for task in self.tasks {
            let samples = tokio::time::timeout_at(limit, task)
                .await
                .unwrap_or_else(|_| panic!("a load loop did not stop within {STOP_LIMIT:?}"))
                .expect("load task panicked");
            all.extend(samples);
        }
        all.sort_by_key(|s| s.start);
        all
    }
}

/// Open-loop load: `rate` calls per second for `duration`, whatever the answers take. Arrivals
/// are paced by `generators` tasks (each on its own interval, so one late timer does not hold
/// the rest up), and each call runs in a task of its own, so a slow answer never delays the
/// next arrival. Returns every call's sample, in start order.
pub async fn open_loop<T, F, Fut>(
    rate: f64,
    duration: Duration,
    generators: usize,
    call: F,
) -> Vec<Sample<T>>
where
    T: Send + 'static,
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = T> + Send + 'static,
{
    let total = (rate * duration.as_secs_f64()).round() as u64;
    let period = Duration::from_secs_f64(generators as f64 / rate);
    let generators: Vec<JoinHandle<Vec<JoinHandle<Sample<T>>>>> = (0..generators as u64)
        .map(|g| {
            let call = call.clone();
            let count = generators as u64;
            tokio::spawn(async move {
                // Stagger the generators evenly over one period.
                let offset = period.mul_f64(g as f64 / count as f64);
                let mut ticks =
                    tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut calls = Vec::new();
                let mut n = g;
                while n < total {
                    ticks.tick().await;
                    let fut = call(n);
                    calls.push(tokio::spawn(async move {
                        let start = Instant::now();
                        let value = fut.await;
                        Sample {
                            caller: 0,
                            start,
                            took: start.elapsed(),
                            value,
                        }
                    }));
                    n += count;
                }
                calls
            })
        })
        .collect();
    let mut all = Vec::with_capacity(total as usize);
    let limit = tokio::time::Instant::now() + duration + STOP_LIMIT;
    for g in generators {
        for call in g.await.expect("generator panicked") {
            let sample = tokio::time::timeout_at(limit, call)
                .await
                .unwrap_or_else(|_| panic!("a call did not end within {STOP_LIMIT:?}"));
            all.push(sample.expect("call task panicked"));
        }
    }
    all.sort_by_key(|s| s.start);
    all
}
