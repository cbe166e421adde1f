//! The backend's flags. Each is also read from an environment variable (shown in `--help`), so a
//! compose file or a container can configure it without a command line.

use std::net::SocketAddr;

use clap::Parser;
use fanout_proto::cli::{HumanDuration, ModeArg, human_duration};
use fanout_server::ConnLimitsArgs;
use fanout_telemetry::TelemetryArgs;
use fanout_tls::ServerTlsArgs;

use crate::latency::LatencySpec;
use crate::{Config, MAX_WORKERS};

/// A simulated slow dependency: a gRPC `fanout.v1.Backend` that waits for a latency drawn from a
/// distribution, fails at a chosen rate, and waits in the way you choose.
#[derive(Debug, Parser)]
#[command(name = "backend", version)]
pub struct Cli {
    /// Address to listen on (use 0.0.0.0:PORT in a container).
    #[arg(long, env = "BACKEND_LISTEN", default_value = "127.0.0.1:50061")]
    pub listen: SocketAddr,

    /// This backend's name: it appears in every reply, and the aggregator calls it by this name.
    #[arg(long, env = "BACKEND_NAME", default_value_t = Config::default().name, value_parser = parse_name)]
    pub name: String,

    /// Latency distribution: `50ms`, `uniform:20ms..80ms`, `lognormal:p50=20ms,p99=200ms`,
    /// or `tail:10ms,p=0.01,1s` (10 ms, but 1% of calls take 1 s). At most 60s.
    #[arg(long, env = "BACKEND_LATENCY", default_value_t = Config::default().latency)]
    pub latency: LatencySpec,

    /// Fraction of calls (0 to 1) that fail with UNAVAILABLE after waiting their latency.
    #[arg(long, env = "BACKEND_FAIL_RATE", default_value_t = Config::default().fail_rate, value_parser = parse_fail_rate)]
    pub fail_rate: f64,

    /// How a call waits out its latency.
    #[arg(long, env = "BACKEND_MODE", value_enum, default_value_t = Config::default().mode.into())]
    pub mode: ModeArg,

    /// Async runtime worker threads [default: one per CPU core]. With `--mode blocking` this is
    /// how many calls can wait at once.
    #[arg(long, env = "BACKEND_WORKERS", value_parser = clap::value_parser!(u16).range(1..=MAX_WORKERS as i64))]
    pub workers: Option<u16>,

    /// Honour per-request overrides (`delay_ms`, `fail`, `mode`). Lets any caller make this
    /// backend slow or failing: for tests and demos, not for a deployment you expose.
    #[arg(long, env = "BACKEND_ALLOW_OVERRIDES")]
    pub allow_overrides: bool,

    /// The most calls worked on at once, like a server with that many workers or a database
    /// with that many connections: the rest wait their turn, first come first served, so past
    /// CAPACITY/latency calls a second the latency grows with the line [default: no limit].
    #[arg(long, env = "BACKEND_CAPACITY", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub capacity: Option<u32>,

    /// Seed for the latency and failure draws, so a run can be repeated exactly (calls drawn in
    /// arrival order). Without it every run differs.
    #[arg(long, env = "BACKEND_SEED")]
    pub seed: Option<u64>,

    /// On SIGTERM/SIGINT, how long to keep serving with health NOT_SERVING before closing the
    /// listener, so load balancers stop sending calls first.
    #[arg(long, env = "BACKEND_DRAIN_DELAY", default_value_t = Config::default().drain_delay.into(), value_parser = human_duration)]
    pub drain_delay: HumanDuration,

    /// On SIGTERM/SIGINT, how long in-flight calls may take to finish.
    #[arg(long, env = "BACKEND_GRACE_PERIOD", default_value_t = Config::default().grace_period.into(), value_parser = human_duration)]
    pub grace_period: HumanDuration,

    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 0.0.0.0:9464 in a container); off
    /// when absent. docs/metrics.md lists the series.
    #[arg(long, env = "BACKEND_METRICS_LISTEN", value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    #[command(flatten)]
    pub tls: ServerTlsArgs,

    #[command(flatten)]
    pub limits: ConnLimitsArgs,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Cli {
    /// The service configuration these flags describe.
    pub fn config(&self) -> Config {
        Config {
            name: self.name.clone(),
            latency: self.latency.clone(),
            fail_rate: self.fail_rate,
            mode: self.mode.into(),
            allow_overrides: self.allow_overrides,
            seed: self.seed,
            capacity: self.capacity.map(|c| c as usize),
            drain_delay: self.drain_delay.into(),
            grace_period: self.grace_period.into(),
            tls: self.tls.files(),
            limits: self.limits.limits(),
            metrics_listen: self.metrics_listen,
        }
    }
}

/// A backend name: what the aggregator's `--backend NAME=URL` and requests refer to.
pub fn parse_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "`{s}` is not a usable name: use 1 to 64 letters, digits, `-`, `_` or `.`"
        ))
    }
}

fn parse_fail_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!(
            "`{s}` is not a fraction from 0 to 1, e.g. `0.1` for 10%"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_a_safe_local_backend() {
        let cli = Cli::try_parse_from(["backend"]).unwrap();
        assert_eq!(cli.listen.to_string(), "127.0.0.1:50061");
        let (config, default) = (cli.config(), Config::default());
        assert_eq!(
            (config.name, config.latency, config.grace_period),
            (default.name, default.latency, default.grace_period)
        );
        assert!(!cli.allow_overrides);
        assert_eq!(cli.config().mode, fanout_proto::v1::Mode::Async);
    }

    #[test]
    fn tls_and_connection_limits_reach_the_config() {
        let cli = Cli::try_parse_from([
            "backend",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--first-request-timeout",
            "2s",
            "--max-concurrent-streams",
            "64",
        ])
        .unwrap();
        let config = cli.config();
        let tls = config.tls.expect("TLS on");
        assert_eq!(
            (tls.cert.to_str(), tls.key.to_str(), tls.client_ca),
            (Some("c.pem"), Some("k.pem"), None)
        );
        assert_eq!(
            config.limits.first_request_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(config.limits.max_concurrent_streams, 64);
        assert!(
            Cli::try_parse_from(["backend"])
                .unwrap()
                .config()
                .tls
                .is_none()
        );
    }

    #[test]
    fn bad_flags_are_refused_with_the_reason() {
        let cases: [(&[&str], &str); 10] = [
            (&["--tls-cert", "c.pem"], "--tls-key"),
            (&["--tls-client-ca", "ca.pem"], "--tls-cert"),
            (&["--max-pending-resets", "0"], "--max-pending-resets"),
            (&["--latency", "uniform:9ms..1ms"], "above the high end"),
            (&["--fail-rate", "1.5"], "not a fraction from 0 to 1"),
            (&["--mode", "sleepy"], "invalid value 'sleepy'"),
            (&["--workers", "0"], "--workers"),
            (&["--name", "a b"], "not a usable name"),
            (&["--grace-period", "soon"], "not a duration"),
            (&["--capacity", "0"], "--capacity"),
        ];
        for (args, want) in cases {
            let err = Cli::try_parse_from(std::iter::once("backend").chain(args.iter().copied()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{args:?}: {err}");
        }
    }
}
