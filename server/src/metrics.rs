//! Prometheus metrics: the registry a server fills, the call-duration histograms both servers
//! record, and the `/metrics` endpoint (`--metrics-listen`) that serves them as Prometheus text.
//!
//! The library is `prometheus-client` (the Prometheus project's crate; BENCHMARKS.md says why,
//! with the measured cost per call). Two rules keep recording off the hot path's bill:
//!
//! - **Label sets are resolved once, not per call.** A family of histograms keyed by a label set
//!   is a map behind a lock; a call never looks it up. [`ByCode`] holds one series per gRPC
//!   status code under fixed labels (a backend's name, a method), each made the first time its
//!   code is seen and read after that through a `OnceLock` (one atomic load).
//! - **What is already counted is read at scrape time.** The counters and gauges behind `Stats`
//!   (attempts, retries, limits, endpoints...) are atomics the servers keep anyway; a
//!   [`Collector`](prometheus_client::collector::Collector) reads them when Prometheus scrapes,
//!   so only the histograms are recorded per call.
//!
//! Names follow OpenTelemetry's RPC semantic conventions where they exist
//! (`rpc_server_call_duration_seconds` with `rpc_system`, `rpc_service`, `rpc_method` and
//! `rpc_grpc_status_code`) and Prometheus' naming rules elsewhere; docs/metrics.md lists every
//! series.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::Registry;
use prometheus_client::registry::Unit;

use crate::counters::Counters;

mod endpoint;
mod scrape;

pub use self::endpoint::serve;
pub use self::scrape::{counter, counters, gauge, gauges};

/// Histogram buckets for durations, in seconds: from the sub-millisecond answers of a local
/// backend to the longest deadline a deployment here sets (60 s).
pub const DURATION_BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0,
];

/// A label set: names and values.
pub type Labels = Vec<(&'static str, String)>;

/// gRPC has 17 status codes, 0 (OK) to 16 (UNAUTHENTICATED).
const CODES: usize = 17;
/// Where a status outside gRPC's codes is counted: UNKNOWN.
const UNKNOWN: usize = 2;

/// A family of duration histograms keyed by label set.
pub type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// Registers a family of duration histograms as `{name}_seconds`.
pub fn register_histograms(registry: &mut Registry, name: &str, help: &str) -> Histograms {
    let family = Histograms::new_with_constructor(duration_histogram as fn() -> Histogram);
    registry.register_with_unit(name, help, Unit::Seconds, family.clone());
    family
}

/// A family of duration histograms registered under one name, with a `rpc_grpc_status_code`
/// label beside the caller's.
#[derive(Debug, Clone)]
pub struct Durations {
    family: Histograms,
}

impl Durations {
    /// Registers `{name}_seconds` in `registry`.
    pub fn register(registry: &mut Registry, name: &str, help: &str) -> Self {
        Durations {
            family: register_histograms(registry, name, help),
        }
    }

    /// The series under `labels`, one per status code.
    pub fn by_code(&self, labels: Labels) -> ByCode {
        ByCode {
            family: self.family.clone(),
            labels,
            codes: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Records one duration under `labels` and `code`, looking the series up in the family's
    /// map: for label sets that cannot be known in advance (a method nobody serves), not for
    /// the calls of a hot path.
    pub fn observe_once(&self, mut labels: Labels, code: i32, took: Duration) {
        labels.push(("rpc_grpc_status_code", code_index(code).to_string()));
        self.family
            .get_or_create(&labels)
            .observe(took.as_secs_f64());
    }
}

fn code_index(code: i32) -> usize {
    usize::try_from(code)
        .ok()
        .filter(|&c| c < CODES)
        .unwrap_or(UNKNOWN)
}

/// Duration histograms under fixed labels, one per status code; see the module docs.
#[derive(Debug)]
pub struct ByCode {
    family: Histograms,
    labels: Labels,
    codes: [OnceLock<Histogram>; CODES],
}

impl ByCode {
    /// Records one call that ended with `code` (a gRPC status code) after `took`.
    pub fn observe(&self, code: i32, took: Duration) {
        let code = code_index(code);
        self.codes[code]
            .get_or_init(|| {
                let mut labels = self.labels.clone();
                labels.push(("rpc_grpc_status_code", code.to_string()));
                self.family.get_or_create(&labels).clone()
            })
            .observe(took.as_secs_f64());
    }
}

impl ByCode {
    /// Starts timing one call; it counts as CANCELLED unless [`Timer::end`] says how it ended
    /// (a call whose future was dropped was cancelled).
    pub fn start(self: &Arc<Self>) -> Timer {
        Timer {
            series: self.clone(),
            start: std::time::Instant::now(),
            code: 1,
        }
    }
}

/// One call being timed; recorded in its [`ByCode`] when dropped.
#[derive(Debug)]
pub struct Timer {
    series: Arc<ByCode>,
    start: std::time::Instant,
    code: i32,
}

impl Timer {
    /// The call ended with `code`.
    pub fn end(mut self, code: i32) {
        self.code = code;
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.series.observe(self.code, self.start.elapsed());
    }
}

/// The labels OpenTelemetry gives a gRPC method: `rpc_system`, `rpc_service`, `rpc_method`, from
/// a path such as `/fanout.v1.Backend/Fetch`.
pub fn rpc_labels(path: &str) -> Labels {
    let path = path.strip_prefix('/').unwrap_or(path);
    let (service, method) = path.split_once('/').unwrap_or((path, ""));
    vec![
        ("rpc_system", "grpc".to_owned()),
        ("rpc_service", service.to_owned()),
        ("rpc_method", method.to_owned()),
    ]
}

/// `rpc_server_call_duration_seconds`: every call a server answered, to the end of its reply.
/// The methods a server serves get their series resolved once; others (a method nobody serves,
/// reflection) are looked up per call.
#[derive(Debug)]
pub struct ServerCalls {
    durations: Durations,
    methods: Vec<(&'static str, ByCode)>,
}

/// Which of [`ServerCalls`]' methods a call is for.
#[derive(Debug)]
pub(crate) enum CallMethod {
    Known(usize),
    Other(String),
}

impl ServerCalls {
    /// Registers the histogram; `paths` are the methods whose series are resolved in advance
    /// (`/fanout.v1.Backend/Fetch`...).
    pub fn register(registry: &mut Registry, paths: &[&'static str]) -> Self {
        let durations = Durations::register(
            registry,
            "rpc_server_call_duration",
            "Duration of the calls this server answered, to the end of the reply",
        );
        let methods = paths
            .iter()
            .map(|&p| (p, durations.by_code(rpc_labels(p))))
            .collect();
        ServerCalls { durations, methods }
    }

    pub(crate) fn method(&self, path: &str) -> CallMethod {
        match self.methods.iter().position(|(p, _)| *p == path) {
            Some(i) => CallMethod::Known(i),
            None => CallMethod::Other(path.to_owned()),
        }
    }

    pub(crate) fn observe(&self, method: &CallMethod, code: i32, took: Duration) {
        match method {
            CallMethod::Known(i) => self.methods[*i].1.observe(code, took),
            CallMethod::Other(path) => self.durations.observe_once(rpc_labels(path), code, took),
        }
    }
}

/// What a server serves at `/metrics`: its registry, and the server-call histograms its
/// `x-process-time` layer records into.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub calls: Arc<ServerCalls>,
}

impl Metrics {
    /// A registry with what every server exports: the server-call histograms (`paths`
    /// resolved in advance) and its [`Counters`]. The server adds its own before
    /// [`Metrics::new`] shares it.
    pub fn base(counters: Arc<Counters>, paths: &[&'static str]) -> (Registry, Arc<ServerCalls>) {
        let mut registry = Registry::default();
        let calls = Arc::new(ServerCalls::register(&mut registry, paths));
        registry.register_collector(Box::new(ServerCounters(counters)));
        (registry, calls)
    }

    pub fn new(registry: Registry, calls: Arc<ServerCalls>) -> Self {
        Metrics {
            registry: Arc::new(registry),
            calls,
        }
    }
}

/// The server's [`Counters`], read at scrape time.
#[derive(Debug)]
struct ServerCounters(Arc<Counters>);

impl Collector for ServerCounters {
    fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
        let c = &self.0;
        gauge(
            &mut e,
            "fanout_server_in_flight_calls",
            "Calls being served now",
            c.in_flight.load(Relaxed),
        )?;
        counter(
            &mut e,
            "fanout_server_calls_cancelled",
            "Calls whose caller cancelled or hung up before the reply",
            c.cancelled.load(Relaxed),
        )?;
        counter(
            &mut e,
            "fanout_runtime_stalls",
            "Times the async workers stalled (the runtime-lag monitor)",
            c.runtime_stalls.load(Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use prometheus_client::encoding::prometheus_text::encode;
    use tokio::net::TcpListener;

    use super::*;

    fn text(registry: &Registry) -> String {
        let mut s = String::new();
        encode(&mut s, registry).unwrap();
        s
    }

    #[test]
    fn a_series_per_code_seen_with_the_callers_labels() {
        let mut registry = Registry::default();
        let calls = ServerCalls::register(&mut registry, &["/fanout.v1.Backend/Fetch"]);
        let fetch = calls.method("/fanout.v1.Backend/Fetch");
        calls.observe(&fetch, 0, Duration::from_millis(3));
        calls.observe(&fetch, 0, Duration::from_millis(30));
        calls.observe(&fetch, 4, Duration::from_secs(2));
        calls.observe(&calls.method("/x.Y/Z"), 12, Duration::from_millis(1));
        let t = text(&registry);
        let ok = r#"rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Backend",rpc_method="Fetch",rpc_grpc_status_code="0"} 2"#;
        assert!(t.contains(ok), "{t}");
        assert!(
            t.contains(r#"rpc_method="Fetch",rpc_grpc_status_code="4"} 1"#),
            "{t}"
        );
        assert!(t.contains(r#"rpc_service="x.Y",rpc_method="Z",rpc_grpc_status_code="12"} 1"#));
        // 3 ms and 30 ms fall in the buckets up to 5 ms and 50 ms.
        assert!(
            t.contains(r#"rpc_grpc_status_code="0",le="0.005"} 1"#),
            "{t}"
        );
        assert!(
            t.contains(r#"rpc_grpc_status_code="0",le="0.05"} 2"#),
            "{t}"
        );
        assert!(
            t.contains("# TYPE rpc_server_call_duration_seconds histogram"),
            "{t}"
        );
        // No series for a code never seen.
        assert!(!t.contains(r#"rpc_grpc_status_code="14""#), "{t}");
    }

    #[test]
    fn a_code_outside_grpcs_is_unknown() {
        let mut registry = Registry::default();
        let d = Durations::register(&mut registry, "d", "h");
        d.by_code(vec![]).observe(99, Duration::ZERO);
        assert!(text(&registry).contains(r#"d_seconds_count{rpc_grpc_status_code="2"} 1"#));
    }

    #[tokio::test]
    async fn the_endpoint_serves_text_at_metrics_and_404_elsewhere() {
        let mut registry = Registry::default();
        Durations::register(&mut registry, "d", "h")
            .by_code(vec![])
            .observe(0, Duration::ZERO);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener, Arc::new(registry)));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes()).await.unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(
            ok.contains("content-type: text/plain; version=0.0.4"),
            "{ok}"
        );
        assert!(ok.contains("# TYPE d_seconds histogram"), "{ok}");
        assert!(get("/").await.starts_with("HTTP/1.1 404"));
        server.abort();
    }
}
