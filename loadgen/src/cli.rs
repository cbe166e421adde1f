//! The loadgen's flags. Each is also read from an environment variable (shown in `--help`).
//! Flags that only make sense together are checked here ([`LoadArgs::load`]) or where the
//! target is known (`run`, `compare`): a flag is honoured or refused, never silently ignored.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use backend::latency::LatencySpec;
use clap::{Args, Parser, Subcommand};
pub use fanout_proto::cli::{FanoutArg, ModeArg};
use fanout_proto::cli::{duration, positive_duration};

use crate::model::{Load, Rpc, Shape};

/// Callers of a closed loop when -c is not given.
pub const DEFAULT_CALLERS: u32 = 64;
/// The cap on an open loop's calls outstanding when neither -c nor --max-outstanding is given.
pub const DEFAULT_MAX_OUTSTANDING: u32 = 10_000;
/// How long an open loop waits for its last calls when --drain is not given.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// Local deployment defaults, when the flags are not given.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(50);
pub const DEFAULT_LOCAL_BACKENDS: u32 = 3;

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
    /// Adds up reports of `run --json` from several loadgens that drove one target together
    /// (histograms merged exactly, rates summed) into one report: the same table, JSON and chart
    /// as `run`.
    Merge(MergeArgs),
    /// Exit 0 when the server at URL reports SERVING on grpc.health.v1, 1 otherwise: for
    /// container healthchecks and scripts.
    Health(HealthArgs),
}

impl Command {
    /// The runtime worker threads asked for, by the subcommands that drive load.
    pub fn threads(&self) -> Option<u16> {
        match self {
            Command::Run(a) => a.runtime.threads,
            Command::Compare(a) => a.runtime.threads,
            Command::Merge(_) | Command::Health(_) => Some(1),
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

/// How much load; shared by `run` and `compare`.
#[derive(Debug, Clone, Args)]
pub struct LoadArgs {
    /// Closed loop: this many callers, each calling again as soon as its call returns
    /// [default: 64]. With --rate, if given: the most calls outstanding at once, as
    /// --max-outstanding (give one of the two).
    #[arg(long, short = 'c', env = "LOADGEN_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub concurrency: Option<u32>,

    /// Open loop: send this many calls per second for the whole --duration, whatever the
    /// target does; latencies count from each call's due time (corrected for coordinated
    /// omission). Calls outstanding grow as needed up to --max-outstanding.
    #[arg(long, env = "LOADGEN_RATE", value_parser = parse_rate)]
    pub rate: Option<f64>,

    /// Open loop: the most calls outstanding at once [default: 10000]. A call that falls due
    /// with this many outstanding is not sent: it is counted as dropped, and the report says so.
    #[arg(long, env = "LOADGEN_MAX_OUTSTANDING", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_outstanding: Option<u32>,

    /// Open loop: how long the calls still outstanding when the schedule ends may take to
    /// finish [default: 5s]; those still unanswered then are counted as cut off. The run lasts
    /// at most --warmup + --duration + --drain.
    #[arg(long, env = "LOADGEN_DRAIN", value_parser = duration)]
    pub drain: Option<Duration>,

    /// Stop after this many measured calls instead of after --duration.
    #[arg(long, short = 'n', env = "LOADGEN_REQUESTS", value_parser = clap::value_parser!(u64).range(1..))]
    pub requests: Option<u64>,

    /// HTTP/2 connections to spread the calls over.
    #[arg(long, env = "LOADGEN_CONNECTIONS", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub connections: u32,

    /// Bound on one call, also sent as its grpc-timeout. Unset: no per-call bound (a closed loop
    /// still ends at its --duration, abandoning calls in flight), as h2load and wrk send none.
    #[arg(long, env = "LOADGEN_TIMEOUT", value_parser = positive_duration)]
    pub timeout: Option<Duration>,
}

impl LoadArgs {
    /// The load these flags describe, measured for `duration` (unless `--requests` is given)
    /// after `warmup`; an error names flags that do not go together.
    pub fn load(&self, duration: Duration, warmup: Duration) -> Result<Load, String> {
        let shape = match self.rate {
            None => {
                if self.max_outstanding.is_some() {
                    return Err(
                        "--max-outstanding caps an open loop (--rate); a closed loop \
                                has exactly -c calls outstanding"
                            .into(),
                    );
                }
                if self.drain.is_some() {
                    return Err(
                        "--drain applies to an open loop (--rate); a closed loop ends \
                                at its --duration, abandoning the calls in flight"
                            .into(),
                    );
                }
                Shape::Closed {
                    callers: self.concurrency.unwrap_or(DEFAULT_CALLERS) as usize,
                }
            }
            Some(rate) => {
                if self.concurrency.is_some() && self.max_outstanding.is_some() {
                    return Err("-c and --max-outstanding both cap an open loop's calls \
                                outstanding: give one of them"
                        .into());
                }
                Shape::Open {
                    rate,
                    max_outstanding: self
                        .max_outstanding
                        .or(self.concurrency)
                        .unwrap_or(DEFAULT_MAX_OUTSTANDING)
                        as usize,
                    drain: self.drain.unwrap_or(DEFAULT_DRAIN),
                }
            }
        };
        Ok(Load {
            shape,
            duration: self.requests.is_none().then_some(duration),
            requests: self.requests,
            warmup,
            timeout: self.timeout,
        })
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

/// The local deployment's shape (and, against a --target, what the theory assumes).
#[derive(Debug, Clone, Args)]
pub struct LocalArgs {
    /// Backend latency: `50ms`, `uniform:20ms..80ms`, `lognormal:p50=20ms,p99=200ms`, ...
    /// [default: 50ms]. With --target it must be fixed: it is sent as the delay_ms override.
    #[arg(long, env = "LOADGEN_LATENCY")]
    pub latency: Option<LatencySpec>,

    /// Backends per aggregate call, in the local deployment [default: 3].
    #[arg(long, env = "LOADGEN_LOCAL_BACKENDS", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub local_backends: Option<u32>,

    /// Replicas of each local backend [default: 1]: the aggregator balances over them, and
    /// `run` reports the share of calls each served.
    #[arg(long, env = "LOADGEN_REPLICAS", value_parser = clap::value_parser!(u32).range(1..=16))]
    pub replicas: Option<u32>,

    /// Runtime workers of each backend (W_b in the theory; against a --target, what the theory
    /// assumes).
    #[arg(long, env = "LOADGEN_BACKEND_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub backend_workers: u32,

    /// Runtime workers of the aggregator (W_a in the theory; against a --target, what the
    /// theory assumes).
    #[arg(long, env = "LOADGEN_AGGREGATOR_WORKERS", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub aggregator_workers: u32,
}

impl LocalArgs {
    /// The backends' latency: the flag's, or the default.
    pub fn latency(&self) -> LatencySpec {
        self.latency
            .clone()
            .unwrap_or(LatencySpec::Fixed(DEFAULT_LATENCY))
    }

    pub fn local_backends(&self) -> usize {
        self.local_backends.unwrap_or(DEFAULT_LOCAL_BACKENDS) as usize
    }

    pub fn replicas(&self) -> usize {
        self.replicas.unwrap_or(1) as usize
    }

    /// Refuses the flags that shape a local deployment, for a run against a --target.
    pub fn check_for_target(&self) -> Result<(), String> {
        if self.local_backends.is_some() {
            return Err(
                "--local-backends sizes the local deployment; with --target the \
                        backends are the target's"
                    .into(),
            );
        }
        if self.replicas.is_some() {
            return Err(
                "--replicas starts replicas in the local deployment; with --target \
                        the replicas are the target's (its Stats show them)"
                    .into(),
            );
        }
        match &self.latency {
            None | Some(LatencySpec::Fixed(_)) => Ok(()),
            Some(other) => Err(format!(
                "with --target, --latency must be a fixed duration such as 50ms (it is sent as \
                 the delay_ms override); `{other}` is a distribution only a local deployment \
                 can simulate"
            )),
        }
    }
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

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give calls per second above 0 and up to 10000000, e.g. `500`"
        )),
    }
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

    fn load(args: &[&str]) -> Result<Load, String> {
        match parse(args).unwrap().command {
            Command::Run(a) => a.load.load(a.duration, a.warmup),
            _ => unreachable!("a run"),
        }
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
        ] {
            let err = parse(args).unwrap_err().to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn loads_that_do_not_go_together_are_refused() {
        for (args, want) in [
            (&["run", "--max-outstanding", "5"][..], "caps an open loop"),
            (&["run", "--drain", "1s"], "applies to an open loop"),
            (
                &["run", "--rate", "5", "-c", "5", "--max-outstanding", "5"],
                "give one of them",
            ),
        ] {
            let err = load(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }

    #[test]
    fn the_open_loop_is_not_capped_by_the_default_callers() {
        let open = |args: &[&str]| load(args).unwrap().shape;
        assert_eq!(
            open(&["run", "--rate", "5000"]),
            Shape::Open {
                rate: 5000.0,
                max_outstanding: DEFAULT_MAX_OUTSTANDING as usize,
                drain: DEFAULT_DRAIN,
            }
        );
        assert_eq!(
            open(&["run", "--rate", "5", "-c", "20000"]).concurrency(),
            20_000
        );
        assert_eq!(
            open(&[
                "run",
                "--rate",
                "5",
                "--max-outstanding",
                "7",
                "--drain",
                "0s"
            ]),
            Shape::Open {
                rate: 5.0,
                max_outstanding: 7,
                drain: Duration::ZERO,
            }
        );
        assert_eq!(open(&["run"]), Shape::Closed { callers: 64 });
        assert_eq!(open(&["run", "-c", "3"]), Shape::Closed { callers: 3 });
    }
}
