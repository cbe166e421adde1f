//! The flags of the load (closed or open loop, how much, for how long) and of the local
//! deployment, shared by `run` and `compare`, with the checks of which go together.

use std::time::Duration;

use backend::latency::LatencySpec;
use clap::Args;
use fanout_proto::cli::{duration, positive_duration};

use crate::model::{Load, Shape};

/// Callers of a closed loop when -c is not given.
pub const DEFAULT_CALLERS: u32 = 64;
/// The cap on an open loop's calls outstanding when neither -c nor --max-outstanding is given.
pub const DEFAULT_MAX_OUTSTANDING: u32 = 10_000;
/// How long an open loop waits for its last calls when --drain is not given.
pub const DEFAULT_DRAIN: Duration = Duration::from_secs(5);
/// Local deployment defaults, when the flags are not given.
pub const DEFAULT_LATENCY: Duration = Duration::from_millis(50);
pub const DEFAULT_LOCAL_BACKENDS: u32 = 3;

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
    #[arg(long, alias = "rps", env = "LOADGEN_RATE", value_parser = parse_rate)]
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

pub(crate) fn parse_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 10_000_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}` is not a rate: give calls per second above 0 and up to 10000000, e.g. `500`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn load(args: &[&str]) -> Result<Load, String> {
        let cli = Cli::try_parse_from(std::iter::once("loadgen").chain(args.iter().copied()));
        match cli.unwrap().command {
            Command::Run(a) => a.load.load(a.duration, a.warmup),
            _ => unreachable!("a run"),
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

    #[test]
    fn help_states_the_defaults_in_force() {
        // These flags are options (so that giving one can be told from not giving it), so
        // their help says the default in words: it must say the one the code applies.
        use clap::CommandFactory;
        let help = Cli::command()
            .find_subcommand_mut("run")
            .expect("run")
            .render_long_help()
            .to_string();
        let help = help.split_whitespace().collect::<Vec<_>>().join(" ");
        for want in [
            format!("[default: {DEFAULT_CALLERS}]"),
            format!("[default: {DEFAULT_MAX_OUTSTANDING}]"),
            format!("[default: {}]", humantime::format_duration(DEFAULT_DRAIN)),
            format!("[default: {}]", humantime::format_duration(DEFAULT_LATENCY)),
            format!("[default: {DEFAULT_LOCAL_BACKENDS}]"),
            "[default: 1]".into(),
        ] {
            assert!(help.contains(&want), "no {want} in run --help");
        }
    }
}
