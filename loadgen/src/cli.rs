//! The loadgen's flags. Each is also read from an environment variable (shown in `--help`).

use std::path::PathBuf;
use std::time::Duration;

use backend::latency::LatencySpec;
use clap::{Args, Parser, Subcommand};
pub use fanout_proto::cli::{FanoutArg, ModeArg};
use fanout_proto::cli::{duration, positive_duration};
use fanout_tls::ClientTlsArgs;

use crate::model::{Load, Rpc};

/// Measures fanout's throughput and latency under blocking and non-blocking configurations,
/// against the theoretical bound. Without --target it starts a local deployment by itself.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Traces: with OTEL_EXPORTER_OTLP_ENDPOINT set, a share of the calls (--trace-ratio,
    /// default 1%) start a trace that continues through the aggregator and backends.
    #[command(flatten)]
    pub telemetry: fanout_telemetry::TelemetryArgs,

    /// Runtime worker threads driving the load [default: one per core]. On a machine shared
    /// with the server under test, fewer threads can leave it more CPU; 1 runs tokio's
    /// single-threaded scheduler (no work stealing, no cross-thread wake-ups).
    #[arg(long, global = true, env = "LOADGEN_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One scenario: drive load at one target and report calls/s, latency percentiles and
    /// status counts.
    Run(RunArgs),
    /// The matrix: every backend --mode against every aggregator --fanout under the same load,
    /// each beside its theoretical bound; prints a table, writes JSON and an SVG chart.
    Compare(CompareArgs),
    /// Exit 0 when the server at URL reports SERVING on grpc.health.v1, 1 otherwise: for
    /// container healthchecks and scripts.
    Health(HealthArgs),
}

/// `loadgen health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server, e.g. http://127.0.0.1:50051 (or 127.0.0.1:50051).
    pub url: String,

    /// The service to ask about; empty means the whole server.
    #[arg(long, default_value = "")]
    pub service: String,

    /// How long to wait for an answer.
    #[arg(long, default_value = "2s", value_parser = positive_duration)]
    pub timeout: Duration,

    /// For an https:// URL.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// How much load; shared by `run` and `compare`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Concurrent callers (closed loop), or with --rate the most calls outstanding at once.
    #[arg(long, short = 'c', env = "LOADGEN_CONCURRENCY", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: u32,

    /// Open loop: send this many calls per second, whatever the latency; latencies then count
    /// from each call's scheduled start (corrected for coordinated omission).
    #[arg(long, env = "LOADGEN_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Stop after this many measured calls instead of after --duration.
    #[arg(long, short = 'n', env = "LOADGEN_REQUESTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// HTTP/2 connections to spread the callers over.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Bound on one call, also sent as its grpc-timeout. Unset: no per-call bound (a closed loop
    /// still ends at its --duration, abandoning calls in flight), as h2load and wrk send none.
    #[arg(long, env = "LOADGEN_TIMEOUT", value_parser = positive_duration)]
    pub timeout: Option<Duration>,
}

impl LoadArgs {
    /// The load these flags describe, measured for `duration` (unless `--requests` is given)
    /// after `warmup`.
    pub fn load(&self, duration: Duration, warmup: Duration) -> Load {
        Load {
            concurrency: self.concurrency as usize,
            rate: self.rate,
            duration: self.requests.is_none().then_some(duration),
            requests: self.requests,
            warmup,
            timeout: self.timeout,
        }
    }
}

/// `loadgen run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// The server to load, e.g. http://127.0.0.1:50051. Without it, loadgen starts backends
    /// (and an aggregator) on loopback, configured by the flags below, and stops them after.
    #[arg(long, env = "LOADGEN_TARGET")]
    pub target: Option<String>,

    /// Which call to make: Aggregator.Aggregate, Aggregator.AggregateStream or Backend.Fetch.
    #[arg(long, env = "LOADGEN_RPC", value_enum, default_value_t = Rpc::Aggregate)]
    pub rpc: Rpc,

    #[command(flatten)]
    pub load: LoadArgs,

    /// How long to measure.
    #[arg(long, short = 'd', env = "LOADGEN_DURATION", default_value = "10s", value_parser = positive_duration)]
    pub duration: Duration,

    /// Calls made before measuring starts (connections warm, caches filled).
    #[arg(long, env = "LOADGEN_WARMUP", default_value = "1s", value_parser = duration)]
    pub warmup: Duration,

    /// The query every call sends.
    #[arg(long, env = "LOADGEN_QUERY", default_value = "loadgen")]
    pub query: String,

    /// Call only these backends (comma-separated names).
    #[arg(long, env = "LOADGEN_BACKENDS", value_delimiter = ',')]
    pub backends: Vec<String>,

    /// Backend wait mode. Local deployment: the backends' --mode. With --target: sent as the
    /// per-request override (the target must allow overrides).
    #[arg(long, env = "LOADGEN_MODE", value_enum)]
    pub mode: Option<ModeArg>,

    /// Fan-out. Local deployment: the aggregator's --fanout. With --target: sent as the
    /// per-request override.
    #[arg(long, env = "LOADGEN_FANOUT", value_enum)]
    pub fanout: Option<FanoutArg>,

    /// With --target: ask the backends to wait exactly this long (the delay_ms override).
    #[arg(long, env = "LOADGEN_DELAY", value_parser = duration)]
    pub delay: Option<Duration>,

    /// Ask the aggregator not to use its cache.
    #[arg(long, env = "LOADGEN_NO_CACHE")]
    pub no_cache: bool,

    #[command(flatten)]
    pub local: LocalArgs,

    /// For an https:// --target.
    #[command(flatten)]
    pub tls: ClientTlsArgs,

    /// Also write the report as JSON to this file.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,
}

/// The local deployment's shape (and, against a --target, what the theory assumes).
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Backend latency: `50ms`, `uniform:20ms..80ms`, `lognormal:p50=20ms,p99=200ms`, ...
    /// With --target it must be fixed: it is sent as the delay_ms override.
    #[arg(long, env = "LOADGEN_LATENCY", default_value = "50ms")]
    pub latency: LatencySpec,

    /// Backends per aggregate call.
    #[arg(long, env = "LOADGEN_LOCAL_BACKENDS", default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub local_backends: u32,

    /// Runtime workers of each backend (W_b in the theory).
    #[arg(long, env = "LOADGEN_BACKEND_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub backend_workers: u32,

    /// Runtime workers of the aggregator (W_a in the theory).
    #[arg(long, env = "LOADGEN_AGGREGATOR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub aggregator_workers: u32,
}

/// `loadgen compare`.
#[derive(Debug, Clone, Args)]
pub struct CompareArgs {
    /// An aggregator started with --allow-overrides, whose backends allow overrides too: each
    /// configuration is then driven through per-request overrides. Without it, loadgen starts
    /// a fresh local deployment for every configuration.
    #[arg(long, env = "LOADGEN_TARGET")]
    pub target: Option<String>,

    /// Backend modes to compare (comma-separated).
    #[arg(
        long,
        env = "LOADGEN_MODES",
        value_enum,
        value_delimiter = ',',
        default_value = "async,blocking,spawn-blocking,cpu"
    )]
    pub modes: Vec<ModeArg>,

    /// Aggregator fan-outs to compare (comma-separated).
    #[arg(
        long,
        env = "LOADGEN_FANOUTS",
        value_enum,
        value_delimiter = ',',
        default_value = "concurrent,sequential,blocking"
    )]
    pub fanouts: Vec<FanoutArg>,

    #[command(flatten)]
    pub load: LoadArgs,

    /// How long to measure each configuration.
    #[arg(long, short = 'd', env = "LOADGEN_DURATION", default_value = "3s", value_parser = positive_duration)]
    pub duration: Duration,

    /// Calls made before measuring each configuration.
    #[arg(long, env = "LOADGEN_WARMUP", default_value = "1s", value_parser = duration)]
    pub warmup: Duration,

    #[command(flatten)]
    pub local: LocalArgs,

    /// For an https:// --target.
    #[command(flatten)]
    pub tls: ClientTlsArgs,

    /// Where to write the JSON report.
    #[arg(long, env = "LOADGEN_JSON", default_value = "out/compare.json")]
    pub json: PathBuf,

    /// Where to write the chart (SVG).
    #[arg(long, env = "LOADGEN_CHART", default_value = "out/compare.svg")]
    pub chart: PathBuf,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give calls per second above 0, e.g. `500`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        for (args, want) in [
            (&["run", "--rate", "0"][..], "is not a rate"),
            (
                &["run", "--latency", "uniform:9ms..1ms"],
                "above the high end",
            ),
            (&["run", "--duration", "0s"], "zero"),
            (&["run", "--rpc", "post"], "invalid value 'post'"),
            (
                &["compare", "--modes", "async,sleepy"],
                "invalid value 'sleepy'",
            ),
            (&["compare", "--concurrency", "0"], "--concurrency"),
        ] {
            let err = Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
