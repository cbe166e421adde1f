//! The aggregator's flags. Each is also read from an environment variable (shown in `--help`).

use std::net::SocketAddr;

use std::time::Duration;

use clap::Parser;
use fanout_proto::cli::{
    FanoutArg, HumanDuration, duration, human_duration, human_positive_duration,
};
use fanout_server::ConnLimitsArgs;
use fanout_telemetry::TelemetryArgs;
use fanout_tls::{ClientTlsArgs, ServerTlsArgs};

use crate::backends::{BackendSpec, check_specs};
use crate::client::retry::RetryPolicy;
use crate::{Admission, Config, HedgeAfter, HedgePolicy, Limit, ReplicaPolicy, Resolver};
use fanout_proto::limits::{MAX_TIMEOUT, MIN_TIMEOUT};

/// Fans each request out to several `fanout.v1.Backend`s, with per-attempt timeouts, an overall
/// deadline, concurrency limits, retries with backoff and a budget, an optional cache, and
/// results streamed back as each backend answers.
#[derive(Debug, Parser)]
#[command(name = "aggregator", version)]
pub struct Cli {
    /// Address to listen on (use 0.0.0.0:PORT in a container).
    #[arg(long, env = "AGGREGATOR_LISTEN", default_value = "127.0.0.1:50051")]
    pub listen: SocketAddr,

    /// A backend as NAME=URL, e.g. `alpha=http://127.0.0.1:50061`; repeat for each. In the env
    /// var, separate them with commas. `https://` URLs are called over TLS (see --tls-ca).
    #[arg(
        long = "backend",
        env = "AGGREGATOR_BACKENDS",
        value_delimiter = ',',
        required = true
    )]
    pub backends: Vec<BackendSpec>,

    /// Bound on one attempt at one backend (a request may ask for less).
    #[arg(long, env = "AGGREGATOR_ATTEMPT_TIMEOUT", default_value_t = DEFAULT.attempt_timeout.into(), value_parser = timeout)]
    pub attempt_timeout: HumanDuration,

    /// Bound on a whole call; the request's deadline_ms and the caller's grpc-timeout may make
    /// it shorter. Backends are told what remains.
    #[arg(long, env = "AGGREGATOR_DEADLINE", default_value_t = DEFAULT.deadline.into(), value_parser = timeout)]
    pub deadline: HumanDuration,

    /// Attempts per backend per call, the first included (1 = never retry). Only UNAVAILABLE
    /// and an attempt's own timeout are retried.
    #[arg(long, env = "AGGREGATOR_MAX_ATTEMPTS", default_value_t = DEFAULT.retry.max_attempts, value_parser = clap::value_parser!(u32).range(1..=10))]
    pub max_attempts: u32,

    /// Backoff before the first retry; doubles each retry, with jitter.
    #[arg(long, env = "AGGREGATOR_BACKOFF_BASE", default_value_t = DEFAULT.retry.backoff_base.into(), value_parser = human_duration)]
    pub backoff_base: HumanDuration,

    /// The longest backoff.
    #[arg(long, env = "AGGREGATOR_BACKOFF_CAP", default_value_t = DEFAULT.retry.backoff_cap.into(), value_parser = human_duration)]
    pub backoff_cap: HumanDuration,

    /// Retries allowed as a fraction of backend calls (0.2 = 20%), so an outage cannot become a
    /// retry storm.
    #[arg(long, env = "AGGREGATOR_RETRY_BUDGET", default_value_t = DEFAULT.retry.budget_ratio, value_parser = parse_ratio)]
    pub retry_budget: f32,

    /// Retries allowed per second on top of the ratio.
    #[arg(long, env = "AGGREGATOR_RETRY_MIN_PER_SEC", default_value_t = DEFAULT.retry.budget_min_per_sec, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub retry_min_per_sec: u32,

    /// Hedge: when a backend has not answered after this long (`20ms`), or after this
    /// percentile of its recent answers (`p95`), send the same call again (to another replica
    /// if it has one) and take the first answer, cancelling the other. Off unless given. Only
    /// for calls that may safely run twice, as Fetch may.
    #[arg(long, env = "AGGREGATOR_HEDGE_AFTER")]
    pub hedge_after: Option<HedgeAfter>,

    /// Hedges per try at most.
    #[arg(long, env = "AGGREGATOR_MAX_HEDGES", default_value_t = DEFAULT.hedge.max_hedges, value_parser = clap::value_parser!(u32).range(1..=5))]
    pub max_hedges: u32,

    /// Hedges allowed as a fraction of calls (0.05 = 5%, plus one a second), so a backend that
    /// is slow for everyone is not sent twice the load.
    #[arg(long, env = "AGGREGATOR_HEDGE_BUDGET", default_value_t = DEFAULT.hedge.budget_ratio, value_parser = parse_hedge_budget)]
    pub hedge_budget: f32,

    /// Calls in flight at one backend: `auto` refuses nothing until the backend is overloaded
    /// (calls piling up at it while its answers slow down), then holds it to what it can take
    /// (the calls it works on, by Little's law, plus a short line) until it keeps up again; or a
    /// fixed number. Calls over the limit wait --queue-timeout at most.
    #[arg(long, env = "AGGREGATOR_BACKEND_CONCURRENCY", default_value_t = DEFAULT.backend_concurrency)]
    pub backend_concurrency: Limit,

    /// How long a call may wait for a backend slot before it fails fast with that backend's
    /// RESOURCE_EXHAUSTED (the wait counts against the deadline) [default: 20ms with `auto`
    /// limits; with a fixed limit, until the deadline].
    #[arg(long, env = "AGGREGATOR_QUEUE_TIMEOUT", value_parser = human_duration)]
    pub queue_timeout: Option<HumanDuration>,

    /// Aggregate calls in flight: `auto` refuses a call only when a backend it needs is
    /// overloaded and has as many calls as its limit allows (and holds 10000 calls at most), or
    /// a fixed number. Refused calls get RESOURCE_EXHAUSTED at once (no queue, so memory stays
    /// bounded).
    #[arg(long, env = "AGGREGATOR_MAX_IN_FLIGHT", default_value_t = DEFAULT.max_in_flight)]
    pub max_in_flight: Admission,

    /// How to wait for the backends.
    #[arg(long, env = "AGGREGATOR_FANOUT", value_enum, default_value_t = DEFAULT.fanout.into())]
    pub fanout: FanoutArg,

    /// While calls to a backend are in flight, ping it after this long without a frame from it,
    /// so a backend that died without closing its connection (a vanished host, a stopped
    /// process) is noticed and reconnected. Never on an idle connection; a backend that answers
    /// GOAWAY too_many_pings is pinged half as often from then on (gRFC A8).
    #[arg(long, env = "AGGREGATOR_KEEPALIVE_INTERVAL", default_value_t = DEFAULT.keepalive_interval.into(), value_parser = human_positive_duration)]
    pub keepalive_interval: HumanDuration,

    /// How long a ping may go unanswered before the connection is dropped.
    #[arg(long, env = "AGGREGATOR_KEEPALIVE_TIMEOUT", default_value_t = DEFAULT.keepalive_timeout.into(), value_parser = human_positive_duration)]
    pub keepalive_timeout: HumanDuration,

    /// How often backend host names are resolved again: each address is an endpoint (a
    /// Kubernetes headless Service, `docker compose --scale`); new ones are added, vanished ones
    /// drained.
    #[arg(long, env = "AGGREGATOR_RESOLVE_INTERVAL", default_value_t = DEFAULT.replicas.resolve_interval.into(), value_parser = resolve_interval)]
    pub resolve_interval: HumanDuration,

    /// Connection failures or UNAVAILABLE answers in a row after which an endpoint leaves the
    /// rotation (never more than half of a backend's endpoints at once).
    #[arg(long, env = "AGGREGATOR_EJECT_AFTER", default_value_t = DEFAULT.replicas.eject_after, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub eject_after: u32,

    /// How long an ejected endpoint stays out; n times as long the n-th time (at most 5 min).
    #[arg(long, env = "AGGREGATOR_EJECT_TIME", default_value_t = DEFAULT.replicas.eject_time.into(), value_parser = eject_time)]
    pub eject_time: HumanDuration,

    /// Keep each backend's reply to a query this long (`0s` = no cache).
    #[arg(long, env = "AGGREGATOR_CACHE_TTL", default_value_t = DEFAULT.cache_ttl.into(), value_parser = human_duration)]
    pub cache_ttl: HumanDuration,

    /// Async runtime worker threads [default: one per CPU core].
    #[arg(long, env = "AGGREGATOR_WORKERS", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub workers: Option<u16>,

    /// Honour per-request `fanout`, `mode`, `delay_ms` and `fail` (forwarded to backends). Lets any
    /// caller change how calls are made: for tests, demos and loadgen, not for an exposed
    /// deployment.
    #[arg(long, env = "AGGREGATOR_ALLOW_OVERRIDES")]
    pub allow_overrides: bool,

    /// On SIGTERM/SIGINT, how long to keep serving with health NOT_SERVING before closing the
    /// listener, so load balancers stop sending calls first.
    #[arg(long, env = "AGGREGATOR_DRAIN_DELAY", default_value_t = DEFAULT.drain_delay.into(), value_parser = human_duration)]
    pub drain_delay: HumanDuration,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish.
    #[arg(long, env = "AGGREGATOR_GRACE_PERIOD", default_value_t = DEFAULT.grace_period.into(), value_parser = human_duration)]
    pub grace_period: HumanDuration,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464 in a container); off
    /// when absent. docs/metrics.md lists the series.
    #[arg(long, env = "AGGREGATOR_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    #[command(flatten)]
    pub tls: ServerTlsArgs,

    #[command(flatten)]
    pub limits: ConnLimitsArgs,

    /// Calling https:// backends.
    #[command(flatten)]
    pub backend_tls: ClientTlsArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Cli {
    /// The configuration these flags describe, or what is wrong with them together.
    pub fn config(&self) -> Result<Config, String> {
        check_specs(&self.backends)?;
        if self.backend_concurrency == Limit::Auto
            && self.queue_timeout.is_some_and(|q| q.is_zero())
        {
            return Err(
                "--queue-timeout 0s with --backend-concurrency auto would refuse every call the \
                 limit holds back before the limit can adapt; give it a few milliseconds (20ms)"
                    .into(),
            );
        }
        if *self.backoff_base > *self.backoff_cap {
            return Err(format!(
                "--backoff-base {} is above --backoff-cap {}",
                self.backoff_base, self.backoff_cap
            ));
        }
        Ok(Config {
            backends: self.backends.clone(),
            attempt_timeout: self.attempt_timeout.into(),
            deadline: self.deadline.into(),
            retry: RetryPolicy {
                max_attempts: self.max_attempts,
                backoff_base: self.backoff_base.into(),
                backoff_cap: self.backoff_cap.into(),
                budget_ratio: self.retry_budget,
                budget_min_per_sec: self.retry_min_per_sec,
            },
            hedge: HedgePolicy {
                after: self.hedge_after,
                max_hedges: self.max_hedges,
                budget_ratio: self.hedge_budget,
            },
            backend_concurrency: self.backend_concurrency,
            queue_timeout: self.queue_timeout.map(Into::into),
            max_in_flight: self.max_in_flight,
            fanout: self.fanout.into(),
            keepalive_interval: self.keepalive_interval.into(),
            keepalive_timeout: self.keepalive_timeout.into(),
            replicas: ReplicaPolicy {
                resolve_interval: self.resolve_interval.into(),
                eject_after: self.eject_after,
                eject_time: self.eject_time.into(),
                ..DEFAULT.replicas
            },
            resolver: Resolver::default(),
            cache_ttl: self.cache_ttl.into(),
            allow_overrides: self.allow_overrides,
            drain_delay: self.drain_delay.into(),
            grace_period: self.grace_period.into(),
            tls: self.tls.files(),
            limits: self.limits.limits(),
            metrics_listen: self.metrics_listen,
            backend_tls: self.backend_tls.files(),
        })
    }
}

/// The defaults every flag shows and falls back to.
static DEFAULT: std::sync::LazyLock<Config> = std::sync::LazyLock::new(Config::default);

/// A timeout or deadline flag: a duration from 5 ms to 10 minutes.
fn timeout(s: &str) -> Result<HumanDuration, String> {
    let d = duration(s)?;
    if d < MIN_TIMEOUT || d > MAX_TIMEOUT {
        return Err(format!(
            "`{s}` is out of range: use {}ms to {}s",
            MIN_TIMEOUT.as_millis(),
            MAX_TIMEOUT.as_secs()
        ));
    }
    Ok(d.into())
}

/// `--resolve-interval`: from 100 ms (DNS is not free) to an hour.
fn resolve_interval(s: &str) -> Result<HumanDuration, String> {
    bounded(s, Duration::from_millis(100), Duration::from_secs(3600))
}

/// `--eject-time`: from 1 ms to an hour.
fn eject_time(s: &str) -> Result<HumanDuration, String> {
    bounded(s, Duration::from_millis(1), Duration::from_secs(3600))
}

fn bounded(s: &str, low: Duration, high: Duration) -> Result<HumanDuration, String> {
    let d = duration(s)?;
    if d < low || d > high {
        return Err(format!(
            "`{s}` is out of range: use {} to {}",
            humantime::format_duration(low),
            humantime::format_duration(high)
        ));
    }
    Ok(d.into())
}

fn parse_hedge_budget(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{s}` is not a ratio from 0 to 1, e.g. `0.05` for 5% of calls"
        )),
    }
}

fn parse_ratio(s: &str) -> Result<f32, String> {
    match s.trim().parse::<f32>() {
        Ok(r) if (0.0..=10.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{s}` is not a ratio from 0 to 10, e.g. `0.2` for 20% of calls"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let cli = Cli::try_parse_from(std::iter::once("aggregator").chain(args.iter().copied()))
            .map_err(|e| e.to_string())?;
        cli.config()
    }

    #[test]
    fn the_help_states_the_defaults_in_force() {
        use clap::CommandFactory;
        let help = Cli::command().render_long_help().to_string();
        let ceiling = crate::admission::AUTO_CEILING.to_string();
        assert!(
            help.contains(&format!("holds {ceiling} calls at most")),
            "{help}"
        );
        let queue = crate::client::limit::AUTO_QUEUE_TIMEOUT;
        assert!(
            help.contains(&format!("{}ms with `auto`", queue.as_millis())),
            "{help}"
        );
    }

    #[test]
    fn defaults_follow_the_brief() {
        let c = parse(&["--backend", "a=http://127.0.0.1:1"]).unwrap();
        let d = Config::default();
        assert_eq!(
            (
                c.attempt_timeout,
                c.deadline,
                c.backend_concurrency,
                c.max_in_flight
            ),
            (
                d.attempt_timeout,
                d.deadline,
                d.backend_concurrency,
                d.max_in_flight
            )
        );
        assert_eq!(c.retry, RetryPolicy::default());
        assert_eq!(c.fanout, fanout_proto::v1::Fanout::Concurrent);
        assert!(!c.allow_overrides && c.cache_ttl.is_zero());
        // Safe by default: loopback only.
        let cli = Cli::try_parse_from(["aggregator", "--backend", "a=http://127.0.0.1:1"]).unwrap();
        assert_eq!(cli.listen.to_string(), "127.0.0.1:50051");
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        for (args, want) in [
            (&["--backend", "alpha"][..], "is not NAME=URL"),
            (&["--backend", "a=ftp://x:1"], "only http://"),
            (
                &["--backend", "a=http://x:1", "--tls-cert", "c.pem"],
                "--tls-key",
            ),
            (
                &["--backend", "a=http://x:1", "--tls-client-key", "k.pem"],
                "--tls-client-cert",
            ),
            (
                &["--backend", "a=http://x:1", "--backend", "a=http://x:1"],
                "given twice",
            ),
            (
                &["--backend", "a=http://x:1", "--resolve-interval", "0s"],
                "out of range",
            ),
            (
                &["--backend", "a=http://x:1", "--eject-after", "0"],
                "--eject-after",
            ),
            (
                &["--backend", "a=http://x:1", "--eject-time", "2h"],
                "out of range",
            ),
            (&["--backend", "alpha="], "backend alpha has no URL"),
            (
                &["--backend", "a=http://x:1", "--hedge-after", "p0"],
                "not a percentile",
            ),
            (
                &["--backend", "a=http://x:1", "--hedge-after", "p100"],
                "not a percentile",
            ),
            (
                &["--backend", "a=http://x:1", "--hedge-after=-5ms"],
                "neither a duration",
            ),
            (
                &["--backend", "a=http://x:1", "--hedge-budget", "2"],
                "not a ratio from 0 to 1",
            ),
            (
                &["--backend", "a=http://x:1", "--max-hedges", "0"],
                "--max-hedges",
            ),
            (
                &["--backend", "a=http://x:1", "--attempt-timeout", "0s"],
                "out of range",
            ),
            (
                &["--backend", "a=http://x:1", "--deadline", "2h"],
                "out of range",
            ),
            (
                &["--backend", "a=http://x:1", "--retry-budget=-1"],
                "not a ratio",
            ),
            (
                &["--backend", "a=http://x:1", "--max-attempts", "0"],
                "--max-attempts",
            ),
            (
                &["--backend", "a=http://x:1", "--fanout", "parallel"],
                "invalid value 'parallel'",
            ),
            (
                &["--backend", "a=http://x:1", "--backoff-base", "1s"],
                "above --backoff-cap",
            ),
            (&[], "--backend"),
        ] {
            let err = parse(args).unwrap_err();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
