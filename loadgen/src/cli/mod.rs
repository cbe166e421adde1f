//! The loadgen's flags: the subcommands and theirs here, the load's and the local deployment's
//! (shared by `run` and `compare`) in [`load`]. Each is also read from an environment variable
//! (shown in `--help`). Flags that only make sense together are checked in [`load`] or where
//! the target is known (`run`, `compare`): a flag is honoured or refused, never silently
//! ignored.

pub mod load;
pub mod scenario;

pub use load::{
    DEFAULT_CALLERS, DEFAULT_DRAIN, DEFAULT_LATENCY, DEFAULT_LOCAL_BACKENDS,
    DEFAULT_MAX_OUTSTANDING, LoadArgs, LocalArgs,
};

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use clap::{Args, Parser, Subcommand};
pub use fanout_proto::cli::{FanoutArg, ModeArg};
use fanout_proto::cli::{duration, positive_duration};
use fanout_tls::ClientTlsArgs;
pub use scenario::{Condition, Configuration, OverloadArgs, ResilienceArgs, Strategy, TailArgs};

use crate::model::Rpc;

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One scenario: drive load at one target and report calls/s, latency percentiles and
    /// status counts.
    Run(RunArgs),
    /// The matrix: every backend --mode against every aggregator --fanout under the same load,
    /// each beside its theoretical bound; prints a table, writes JSON and an SVG chart.
    Compare(CompareArgs),
    /// Tails: heavy-tailed backends behind fan-outs of 1, 3 and 10, open loop, with no
    /// protection, retries on a short attempt timeout, and hedging after a fixed delay or a
    /// percentile, side by side: p50 to max, the extra backend calls each costs, and the
    /// theory's odds of meeting the tail; a table, JSON and a chart.
    Tail(TailArgs),
    /// Overload: the offered load steps from half to ten times the deployment's capacity,
    /// fixed limits beside adaptive ones (`auto`, the defaults): goodput, shed share, admitted
    /// calls' p50/p99 and the limit per step; then the backends slow down 2x and the limit
    /// follows; a table, JSON and a chart.
    Overload(OverloadArgs),
    /// Resilience: every mechanism against every fault in one table: healthy load, a cold
    /// start, a heavy tail, slow, killed, silent and refusing backends, a slowdown, failures,
    /// overload, each under the aggregator's defaults beside the alternatives (fixed limits, no
    /// protection, hedging): goodput against offered, errors by code, good calls' latency, extra
    /// backend calls; the rules the defaults must keep, PASS or FAIL; a table, JSON and a
    /// heatmap.
    Resilience(ResilienceArgs),
    /// Adds up reports of `run --json` from several loadgens that drove one target together
    /// (histograms merged exactly, rates summed) into one report: the same table, JSON and chart
    /// as `run`.
    Merge(MergeArgs),
    /// Exit 0 when the server at URL reports SERVING on grpc.health.v1, 1 otherwise: for
    /// container healthchecks and scripts.
    Health(HealthArgs),
    /// A running aggregator, live, from its Prometheus metrics: every --interval, its calls/s,
    /// errors and shed calls, and per backend the attempts' rate, errors, p50/p99, concurrency
    /// limit, calls in flight, shed calls, retries, hedges and each replica's share.
    #[command(long_about = WATCH_HELP)]
    Watch(WatchArgs),
}

impl Command {
    /// The runtime worker threads asked for, by the subcommands that drive load.
    pub fn threads(&self) -> Option<u16> {
        match self {
            Command::Run(a) => a.runtime.threads,
            Command::Compare(a) => a.runtime.threads,
            Command::Tail(a) => a.runtime.threads,
            Command::Overload(a) => a.runtime.threads,
            Command::Resilience(a) => a.runtime.threads,
            Command::Merge(_) | Command::Health(_) | Command::Watch(_) => Some(1),
        }
    }
}

/// `loadgen health`.
#[derive(Debug, Clone, Args)]
pub struct HealthArgs {
    /// The server, e.g. http://127.0.0.1:50051 (or 127.0.0.1:50051).
    #[arg(env = "LOADGEN_HEALTH_URL")]
    pub url: String,

    /// The service to ask about; empty means the whole server.
    #[arg(long, env = "LOADGEN_HEALTH_SERVICE", default_value = "")]
    pub service: String,

    /// How long to wait for an answer.
    #[arg(long, env = "LOADGEN_HEALTH_TIMEOUT", default_value = "2s", value_parser = positive_duration)]
    pub timeout: Duration,

    /// For an https:// URL.
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

/// `loadgen watch --help`: where each figure comes from.
const WATCH_HELP: &str = "\
A running aggregator, live, from its Prometheus metrics (its --metrics-listen): every --interval,
its calls/s, errors and shed calls, and per backend the attempts' rate, errors, p50/p99,
concurrency limit, calls in flight, shed calls, retries, hedges and each replica's share.

Every figure but limit and in flight is the change between two scrapes, over the last interval,
so the first snapshot comes one interval after the first scrape; `-`: nothing in the interval to
measure it by.

The first line: Aggregate and AggregateStream calls answered per second and the share not OK
(rpc_server_call_duration_seconds_count), and calls shed at the door (fanout_calls_shed_total).
Then a row per backend (label `backend`):
  calls/s    attempts (first tries, retries, hedges) that ended, per second: the increase of
             rpc_client_call_duration_seconds_count, summed over status codes
  errors     the share of those whose rpc_grpc_status_code is not 0
  p50, p99   of those, from the histogram buckets' increases, interpolated within a bucket as
             Prometheus' histogram_quantile does
  limit      fanout_backend_concurrency_limit, now
  in flight  fanout_backend_in_flight_calls, now
  shed       fanout_backend_door_refused_total + fanout_backend_limit_refused_total
  retries    fanout_backend_retries_total
  hedges     fanout_backend_hedges_total
  replicas   each endpoint's share of fanout_endpoint_attempts_total

On a terminal the screen is redrawn for each snapshot; piped, snapshots follow one another, a
blank line between. If the first scrape fails, watch exits 1 with the reason; a later failure
prints a line on stderr and watch keeps trying.";

/// `loadgen watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// The aggregator's metrics endpoint (its --metrics-listen), e.g. http://127.0.0.1:9464
    /// (or 127.0.0.1:9464); /metrics is the path when the URL has none.
    #[arg(long, env = "LOADGEN_WATCH_TARGET", value_parser = crate::watch::metrics_url)]
    pub target: http::Uri,

    /// How often to scrape and print; each snapshot covers the interval before it.
    #[arg(long, env = "LOADGEN_WATCH_INTERVAL", default_value = "2s", value_parser = positive_duration)]
    pub interval: Duration,

    /// Print this many snapshots, then exit 0 (for scripts); without it, refresh until Ctrl-C.
    #[arg(long, env = "LOADGEN_WATCH_COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
}

/// The loadgen's own threads, for the subcommands that drive load.
#[derive(Debug, Clone, Args)]
pub struct RuntimeArgs {
    /// Runtime worker threads driving the load [default: one per core]. On a machine shared
    /// with the server under test, fewer threads can leave it more CPU; 1 runs tokio's
    /// single-threaded scheduler (no work stealing, no cross-thread wake-ups).
    #[arg(long, env = "LOADGEN_THREADS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub threads: Option<u16>,
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

    /// Start the load at this time (UTC, RFC 3339, e.g. 2030-01-01T12:00:00Z), after connecting
    /// and checking the target: several loadgens given the same time start together, for
    /// `loadgen merge` to add up.
    #[arg(long, env = "LOADGEN_START_AT", value_parser = parse_start_at)]
    pub start_at: Option<SystemTime>,

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

    /// With --target: ask the backends to wait exactly this long (the delay_ms override); the
    /// same as a fixed --latency.
    #[arg(long, env = "LOADGEN_DELAY", value_parser = duration, conflicts_with = "latency")]
    pub delay: Option<Duration>,

    /// Ask the aggregator not to use its cache.
    #[arg(long, env = "LOADGEN_NO_CACHE")]
    pub no_cache: bool,

    #[command(flatten)]
    pub local: LocalArgs,

    /// For an https:// --target.
    #[command(flatten)]
    pub tls: ClientTlsArgs,

    /// Also write the report as JSON to this file (with its histograms, for `loadgen merge`).
    /// `{host}` and `{pid}` in the name become this machine's hostname and the process id, so
    /// that loadgens sharing a folder write a file each.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// Also draw the latency distribution (by percentile) as an SVG chart to this file.
    #[arg(long, env = "LOADGEN_CHART")]
    pub chart: Option<PathBuf>,

    #[command(flatten)]
    pub runtime: RuntimeArgs,
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

    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

/// `loadgen merge`.
#[derive(Debug, Clone, Args)]
pub struct MergeArgs {
    /// Reports written by `loadgen run --json`, or folders of them (every run report in the
    /// folder; earlier merges are skipped).
    #[arg(required = true, env = "LOADGEN_MERGE_REPORTS")]
    pub reports: Vec<PathBuf>,

    /// Also write the combined report as JSON to this file.
    #[arg(long, env = "LOADGEN_JSON")]
    pub json: Option<PathBuf>,

    /// Also draw the combined latency distribution as an SVG chart to this file.
    #[arg(long, env = "LOADGEN_CHART")]
    pub chart: Option<PathBuf>,
}

/// A wall-clock time for --start-at: RFC 3339 in UTC, within the next day.
fn parse_start_at(s: &str) -> Result<SystemTime, String> {
    let at = humantime::parse_rfc3339_weak(s.trim()).map_err(|e| {
        format!(
            "`{s}` is not a time ({e}); write it in UTC like 2030-01-01T12:00:00Z, e.g. \
             $(date -u -d '+30 sec' +%FT%TZ)"
        )
    })?;
    if at
        .duration_since(SystemTime::now())
        .is_ok_and(|ahead| ahead > Duration::from_secs(24 * 3600))
    {
        return Err(format!(
            "`{s}` is more than a day ahead; --start-at is for starting loadgens together"
        ));
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()))
    }

    #[test]
    fn flags_are_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_flag_has_an_env_var() {
        fn walk(cmd: &clap::Command, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_env().is_none() {
                    missing.push(format!("{} {}", cmd.get_name(), arg.get_id()));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), &mut missing);
        assert!(missing.is_empty(), "no env var: {missing:?}");
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
            (&["run", "--start-at", "noon"], "is not a time"),
            (
                &["run", "--start-at", "2999-01-01T00:00:00Z"],
                "more than a day ahead",
            ),
            (
                &["run", "--delay", "5ms", "--latency", "5ms"],
                "cannot be used",
            ),
            (&["run", "--replicas", "0"], "--replicas"),
            (&["run", "--max-outstanding", "0"], "--max-outstanding"),
            (&["health"], "<URL>"),
            (&["tail", "--hedge-percentile", "20ms"], "is a delay"),
            (&["tail", "--hedge-percentile", "p100"], "not a percentile"),
            (&["tail", "--backends", "0"], "--backends"),
            (&["tail", "--strategies", "pray"], "invalid value 'pray'"),
            (&["tail", "--rate", "0"], "is not a rate"),
            (&["tail", "--latency", "tail:5ms,p=2,1s"], "latency"),
            (&["overload", "--steps", "0"], "not a multiple"),
            (&["overload", "--steps", "1,200"], "not a multiple"),
            (&["overload", "--fixed", "0,10"], "not two limits"),
            (&["overload", "--fixed", "10"], "not two limits"),
            (&["overload", "--capacity", "0"], "--capacity"),
            (
                &["overload", "--policies", "magic"],
                "invalid value 'magic'",
            ),
            (
                &["resilience", "--scenarios", "meteor"],
                "invalid value 'meteor'",
            ),
            (&["resilience", "--configs", "on"], "invalid value 'on'"),
            (&["resilience", "--capacity", "0"], "--capacity"),
            (&["resilience", "--tail-rate", "0"], "is not a rate"),
            (&["watch"], "--target <TARGET>"),
            (&["watch", "--target", "ftp://h:1"], "not an http:// URL"),
            (&["watch", "--target", "https://h:1"], "plain http"),
            (&["watch", "--target", "h:1", "--interval", "0s"], "zero"),
            (&["watch", "--target", "h:1", "--count", "0"], "--count"),
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
