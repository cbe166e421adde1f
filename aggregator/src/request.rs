//! Checking an `AggregateRequest` and turning it into a [`Plan`]: everything a call needs,
//! decided once, before any backend is called.

use std::time::Duration;

use fanout_proto::limits;
use fanout_proto::v1::{AggregateRequest, Fanout, Mode};
use tokio::time::Instant;

use crate::Config;
use crate::backends::Backends;
use crate::error::RequestError;

/// Bounds on the time kept back from the caller's `grpc-timeout` to send the answer (5%).
const MIN_MARGIN: Duration = Duration::from_millis(1);
const MAX_MARGIN: Duration = Duration::from_millis(20);

/// One aggregate call, decided.
#[derive(Debug, Clone)]
pub struct Plan {
    pub query: String,
    /// Indices into the aggregator's backends, in the order asked for.
    pub targets: Vec<usize>,
    pub started: Instant,
    /// The whole call ends by then.
    pub deadline: Instant,
    pub attempt_timeout: Duration,
    pub fanout: Fanout,
    /// Forwarded to backends as their `mode` override.
    pub mode: Option<Mode>,
    /// Forwarded to backends as their `delay_ms` override.
    pub delay_ms: Option<u32>,
    /// Forwarded to backends as their `fail` override.
    pub fail: Option<bool>,
    /// The request's own hedge delay (`hedge_after_ms`; zero: no hedging), over the backends'.
    pub hedge_after: Option<Duration>,
    /// Read and write the cache (off with `no_cache`, or when overrides change what the
    /// backends do).
    pub use_cache: bool,
}

fn invalid(msg: String) -> RequestError {
    RequestError::Invalid(msg)
}

impl From<limits::Invalid> for RequestError {
    fn from(e: limits::Invalid) -> Self {
        RequestError::Invalid(e.0)
    }
}

/// Checks `req` against the config and backends; `caller_timeout` is the caller's
/// `grpc-timeout`. The overall deadline is the smallest of the three bounds.
pub fn plan(
    config: &Config,
    backends: &Backends,
    req: &AggregateRequest,
    caller_timeout: Option<Duration>,
) -> Result<Plan, RequestError> {
    let started = Instant::now();
    limits::query(&req.query)?;

    let mut targets = Vec::with_capacity(req.backends.len().max(backends.len()));
    if req.backends.is_empty() {
        targets.extend(0..backends.len());
    } else {
        if req.backends.len() > backends.len() {
            return Err(invalid(format!(
                "{} backends asked for; this aggregator has {} ({})",
                req.backends.len(),
                backends.len(),
                backends.names()
            )));
        }
        for name in &req.backends {
            let i = backends.position(name).ok_or_else(|| {
                invalid(format!(
                    "unknown backend `{name}` in backends (known: {})",
                    backends.names()
                ))
            })?;
            if targets.contains(&i) {
                return Err(invalid(format!(
                    "backend `{name}` is listed twice in backends"
                )));
            }
            targets.push(i);
        }
    }

    let attempt = limits::timeout_ms("attempt_timeout_ms", req.attempt_timeout_ms)?;
    let deadline = limits::timeout_ms("deadline_ms", req.deadline_ms)?;
    // Finish a little before the caller's own deadline, so the partial results reach it in
    // time instead of its deadline expiring first.
    let caller_timeout =
        caller_timeout.map(|t| t.saturating_sub((t / 20).clamp(MIN_MARGIN, MAX_MARGIN)));
    let budget = [deadline, caller_timeout, Some(config.deadline)]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(config.deadline);

    let overrides: Vec<&str> = [
        req.fanout.map(|_| "fanout"),
        req.mode.map(|_| "mode"),
        req.delay_ms.map(|_| "delay_ms"),
        req.fail.map(|_| "fail"),
        req.hedge_after_ms.map(|_| "hedge_after_ms"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !overrides.is_empty() && !config.allow_overrides {
        return Err(RequestError::OverridesDisabled(match overrides[..] {
            ["fanout"] => "fanout",
            ["mode"] => "mode",
            ["delay_ms"] => "delay_ms",
            ["fail"] => "fail",
            ["hedge_after_ms"] => "hedge_after_ms",
            _ => "fanout, mode, delay_ms, fail, hedge_after_ms",
        }));
    }
    let fanout = limits::fanout(req.fanout)?.unwrap_or(config.fanout);
    let mode = limits::mode(req.mode)?;
    let hedge_after = match req.hedge_after_ms {
        Some(0) => Some(Duration::ZERO),
        ms => limits::timeout_ms("hedge_after_ms", ms)?,
    };
    limits::delay_ms(req.delay_ms)?;

    Ok(Plan {
        query: req.query.clone(),
        targets,
        started,
        deadline: started + budget,
        attempt_timeout: attempt.unwrap_or(config.attempt_timeout).min(budget),
        fanout,
        mode,
        delay_ms: req.delay_ms,
        fail: req.fail,
        hedge_after,
        use_cache: !req.no_cache
            && req.mode.is_none()
            && req.delay_ms.is_none()
            && req.fail.is_none(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendSpec;

    fn setup(allow_overrides: bool) -> (Config, Backends) {
        let specs: Vec<BackendSpec> = ["a=http://127.0.0.1:1", "b=http://127.0.0.1:2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let config = Config {
            allow_overrides,
            ..Config::new(specs)
        };
        let backends = Backends::connect(&config, None, &fanout_tls::ClientTls::system(), None);
        (config, backends)
    }

    fn req() -> AggregateRequest {
        AggregateRequest {
            query: "q".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn the_smallest_deadline_wins() {
        let (config, backends) = setup(false);
        let p = plan(&config, &backends, &req(), None).unwrap();
        assert_eq!(p.deadline - p.started, config.deadline);
        let r = AggregateRequest {
            deadline_ms: Some(300),
            ..req()
        };
        let p = plan(&config, &backends, &r, Some(Duration::from_millis(200))).unwrap();
        // The caller's 200 ms, less 5% kept back to send the answer.
        assert_eq!(p.deadline - p.started, Duration::from_millis(190));
        assert_eq!(p.attempt_timeout, Duration::from_millis(190));
        assert_eq!(p.targets, vec![0, 1]);
    }

    #[tokio::test]
    async fn bad_requests_name_the_field() {
        let (config, backends) = setup(false);
        let cases = [
            (
                AggregateRequest {
                    backends: vec!["zeta".into()],
                    ..req()
                },
                "unknown backend `zeta`",
            ),
            (
                AggregateRequest {
                    backends: vec!["a".into(), "a".into()],
                    ..req()
                },
                "listed twice",
            ),
            (
                AggregateRequest {
                    backends: vec!["a".into(), "b".into(), "c".into()],
                    ..req()
                },
                "3 backends asked for",
            ),
            (
                AggregateRequest {
                    deadline_ms: Some(0),
                    ..req()
                },
                "deadline_ms 0 is below",
            ),
            (
                AggregateRequest {
                    attempt_timeout_ms: Some(2),
                    ..req()
                },
                "attempt_timeout_ms 2",
            ),
            (
                AggregateRequest {
                    deadline_ms: Some(u32::MAX),
                    ..req()
                },
                "over the limit",
            ),
            (
                AggregateRequest {
                    query: "x".repeat(5000),
                    ..req()
                },
                "query is 5000 bytes",
            ),
        ];
        for (r, want) in cases {
            let err = plan(&config, &backends, &r, None).unwrap_err();
            assert!(matches!(err, RequestError::Invalid(_)), "{err:?}");
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
    }

    #[tokio::test]
    async fn overrides_need_permission_and_valid_values() {
        let (config, backends) = setup(false);
        let r = AggregateRequest {
            fanout: Some(2),
            ..req()
        };
        let err = plan(&config, &backends, &r, None).unwrap_err();
        assert_eq!(err, RequestError::OverridesDisabled("fanout"));

        let (config, backends) = setup(true);
        let p = plan(&config, &backends, &r, None).unwrap();
        assert_eq!(p.fanout, Fanout::Sequential);
        for (r, want) in [
            (
                AggregateRequest {
                    fanout: Some(9),
                    ..req()
                },
                "fanout 9",
            ),
            (
                AggregateRequest {
                    mode: Some(9),
                    ..req()
                },
                "mode 9",
            ),
            (
                AggregateRequest {
                    delay_ms: Some(70_000),
                    ..req()
                },
                "delay_ms 70000",
            ),
        ] {
            let err = plan(&config, &backends, &r, None).unwrap_err();
            assert!(err.to_string().contains(want), "{want}: {err}");
        }
        let r = AggregateRequest {
            delay_ms: Some(5),
            ..req()
        };
        assert!(!plan(&config, &backends, &r, None).unwrap().use_cache);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use crate::BackendSpec;
    use proptest::prelude::*;

    fn request() -> impl Strategy<Value = AggregateRequest> {
        (
            ".{0,5000}",
            proptest::collection::vec("[a-z]{0,3}", 0..5),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i32>()),
            any::<bool>(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
        )
            .prop_map(
                |(query, backends, attempt, deadline, fanout, mode, no_cache, delay, hedge)| {
                    AggregateRequest {
                        query,
                        backends,
                        attempt_timeout_ms: attempt,
                        deadline_ms: deadline,
                        fanout,
                        mode,
                        no_cache,
                        delay_ms: delay,
                        fail: None,
                        hedge_after_ms: hedge,
                    }
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever arrives, checking it never panics, and what it accepts is within bounds.
        #[test]
        fn any_request_is_accepted_within_bounds_or_refused_cleanly(
            req in request(),
            caller_ms in proptest::option::of(0u64..10_000_000),
            allow in any::<bool>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let specs: Vec<BackendSpec> = ["a=http://127.0.0.1:1", "b=http://127.0.0.1:2"]
                    .iter()
                    .map(|s| s.parse().unwrap())
                    .collect();
                let config = Config { allow_overrides: allow, ..Config::new(specs) };
                let backends = Backends::connect(&config, None, &fanout_tls::ClientTls::system(), None);
                match plan(&config, &backends, &req, caller_ms.map(Duration::from_millis)) {
                    Ok(p) => {
                        prop_assert!(p.deadline - p.started <= config.deadline);
                        prop_assert!(p.attempt_timeout <= p.deadline - p.started);
                        prop_assert!(!p.targets.is_empty() && p.targets.len() <= 2);
                        prop_assert!(p.query.len() <= limits::MAX_QUERY_BYTES);
                        prop_assert!(p.delay_ms.is_none_or(|d| d <= limits::MAX_DELAY_MS));
                    }
                    Err(e) => prop_assert!(!e.to_string().is_empty()),
                }
                Ok(())
            })?;
        }
    }
}
