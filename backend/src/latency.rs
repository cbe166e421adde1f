//! The latency model: how long one call waits, drawn from a distribution given as a short spec.
//!
//! | spec | meaning |
//! |---|---|
//! | `50ms` | always 50 ms |
//! | `uniform:20ms..80ms` | uniformly between 20 and 80 ms |
//! | `lognormal:p50=20ms,p99=200ms` | log-normal with that median and 99th percentile (a long right tail) |
//! | `tail:10ms,p=0.01,1s` | 10 ms, but with probability 0.01 a call takes 1 s |
//!
//! Every value, and every draw, is at most [`MAX_LATENCY`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use rand::Rng;
use rand_distr::{Distribution, LogNormal};

/// The longest latency a spec may name or a draw may return.
pub const MAX_LATENCY: Duration = Duration::from_secs(60);

/// The z-score of the 99th percentile of the standard normal distribution.
const Z99: f64 = 2.326_347_874;

const EXAMPLES: &str =
    "`50ms`, `uniform:20ms..80ms`, `lognormal:p50=20ms,p99=200ms` or `tail:10ms,p=0.01,1s`";

/// A latency distribution; see the module docs for the spec syntax.
#[derive(Debug, Clone, PartialEq)]
pub enum LatencySpec {
    Fixed(Duration),
    Uniform {
        low: Duration,
        high: Duration,
    },
    LogNormal {
        p50: Duration,
        p99: Duration,
    },
    Tail {
        base: Duration,
        p: f64,
        slow: Duration,
    },
}

/// A spec that does not parse, with what is wrong and what would be right.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid latency spec `{spec}`: {problem}; write it like {EXAMPLES}")]
pub struct LatencySpecError {
    spec: String,
    problem: String,
}

impl LatencySpec {
    /// Draws one latency.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> Duration {
        match *self {
            LatencySpec::Fixed(d) => d,
            LatencySpec::Uniform { low, high } => {
                Duration::from_nanos(rng.random_range(nanos(low)..=nanos(high)))
            }
            LatencySpec::LogNormal { p50, p99 } => {
                let (mu, sigma) = log_normal_params(p50, p99);
                // Parameters were checked at parse time; a degenerate (sigma 0) spec is fixed.
                match LogNormal::new(mu, sigma) {
                    Ok(dist) => secs(dist.sample(rng)),
                    Err(_) => p50,
                }
            }
            LatencySpec::Tail { base, p, slow } => {
                if rng.random_bool(p) {
                    slow
                } else {
                    base
                }
            }
        }
    }

    /// The mean latency: what Little's law needs to predict throughput.
    pub fn mean(&self) -> Duration {
        match *self {
            LatencySpec::Fixed(d) => d,
            LatencySpec::Uniform { low, high } => (low + high) / 2,
            LatencySpec::LogNormal { p50, p99 } => {
                let (mu, sigma) = log_normal_params(p50, p99);
                secs((mu + sigma * sigma / 2.0).exp())
            }
            LatencySpec::Tail { base, p, slow } => {
                secs(base.as_secs_f64() * (1.0 - p) + slow.as_secs_f64() * p)
            }
        }
    }
}

fn nanos(d: Duration) -> u64 {
    d.as_nanos() as u64 // at most MAX_LATENCY, so it fits
}

/// Seconds to a duration, clamped to `0..=MAX_LATENCY` (NaN becomes zero).
fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.clamp(0.0, MAX_LATENCY.as_secs_f64()))
}

fn log_normal_params(p50: Duration, p99: Duration) -> (f64, f64) {
    let mu = p50.as_secs_f64().ln();
    let sigma = (p99.as_secs_f64() / p50.as_secs_f64()).ln() / Z99;
    (mu, sigma)
}

impl FromStr for LatencySpec {
    type Err = LatencySpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let fail = |problem: String| LatencySpecError {
            spec: s.to_owned(),
            problem,
        };
        let spec = s.trim();
        let (kind, args) = spec.split_once(':').unwrap_or(("", spec));
        match kind {
            "" => Ok(LatencySpec::Fixed(duration(args).map_err(fail)?)),
            "uniform" => {
                let (low, high) = args
                    .split_once("..")
                    .ok_or_else(|| fail("uniform needs a range `LOW..HIGH`".into()))?;
                let (low, high) = (duration(low).map_err(fail)?, duration(high).map_err(fail)?);
                if low > high {
                    return Err(fail(format!(
                        "the low end {low:?} is above the high end {high:?}"
                    )));
                }
                Ok(LatencySpec::Uniform { low, high })
            }
            "lognormal" => {
                let mut p50 = None;
                let mut p99 = None;
                for part in args.split(',') {
                    match part.trim().split_once('=') {
                        Some(("p50", v)) => p50 = Some(duration(v).map_err(fail)?),
                        Some(("p99", v)) => p99 = Some(duration(v).map_err(fail)?),
                        _ => {
                            return Err(fail(format!(
                                "unexpected `{part}`: lognormal takes `p50=D,p99=D`"
                            )));
                        }
                    }
                }
                let (Some(p50), Some(p99)) = (p50, p99) else {
                    return Err(fail("lognormal needs both `p50=` and `p99=`".into()));
                };
                if p50.is_zero() {
                    return Err(fail("p50 must be above zero".into()));
                }
                if p99 < p50 {
                    return Err(fail(format!("p99 {p99:?} is below p50 {p50:?}")));
                }
                Ok(LatencySpec::LogNormal { p50, p99 })
            }
            "tail" => {
                let parts: Vec<&str> = args.split(',').map(str::trim).collect();
                let [base, p, slow] = parts[..] else {
                    return Err(fail(
                        "tail takes three parts: `BASE,p=PROBABILITY,SLOW`".into(),
                    ));
                };
                let p = p
                    .strip_prefix("p=")
                    .ok_or_else(|| fail(format!("`{p}` should be `p=PROBABILITY`")))?;
                let p: f64 = p
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=1.0).contains(p))
                    .ok_or_else(|| {
                        fail(format!("probability `{p}` is not a number from 0 to 1"))
                    })?;
                Ok(LatencySpec::Tail {
                    base: duration(base).map_err(fail)?,
                    p,
                    slow: duration(slow).map_err(fail)?,
                })
            }
            other => Err(fail(format!(
                "unknown distribution `{other}` (known: uniform, lognormal, tail)"
            ))),
        }
    }
}

/// One duration inside a spec, bounded by [`MAX_LATENCY`].
fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let d = humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration ({e})"))?;
    if d > MAX_LATENCY {
        return Err(format!("{s} is longer than the limit of {MAX_LATENCY:?}"));
    }
    Ok(d)
}

impl fmt::Display for LatencySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let h = humantime::format_duration;
        match *self {
            LatencySpec::Fixed(d) => write!(f, "{}", h(d)),
            LatencySpec::Uniform { low, high } => write!(f, "uniform:{}..{}", h(low), h(high)),
            LatencySpec::LogNormal { p50, p99 } => {
                write!(f, "lognormal:p50={},p99={}", h(p50), h(p99))
            }
            LatencySpec::Tail { base, p, slow } => write!(f, "tail:{},p={p},{}", h(base), h(slow)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn parses_every_form_of_the_brief() {
        assert_eq!("50ms".parse(), Ok(LatencySpec::Fixed(ms(50))));
        assert_eq!(
            "uniform:20ms..80ms".parse(),
            Ok(LatencySpec::Uniform {
                low: ms(20),
                high: ms(80)
            })
        );
        assert_eq!(
            "lognormal:p50=20ms,p99=200ms".parse(),
            Ok(LatencySpec::LogNormal {
                p50: ms(20),
                p99: ms(200)
            })
        );
        assert_eq!(
            "tail:10ms,p=0.01,1s".parse(),
            Ok(LatencySpec::Tail {
                base: ms(10),
                p: 0.01,
                slow: ms(1000)
            })
        );
    }

    #[test]
    fn display_round_trips() {
        for s in [
            "50ms",
            "uniform:20ms..80ms",
            "lognormal:p50=20ms,p99=200ms",
            "tail:10ms,p=0.01,1s",
        ] {
            let spec: LatencySpec = s.parse().unwrap();
            assert_eq!(
                spec.to_string().parse::<LatencySpec>().unwrap(),
                spec,
                "{s}"
            );
        }
    }

    #[test]
    fn errors_name_the_problem_and_show_an_example() {
        let cases = [
            ("fast", "`fast` is not a duration"),
            ("uniform:80ms..20ms", "above the high end"),
            ("uniform:20ms", "needs a range"),
            ("lognormal:p50=20ms", "needs both"),
            ("lognormal:p50=200ms,p99=20ms", "below p50"),
            ("lognormal:p50=0ms,p99=20ms", "above zero"),
            ("tail:10ms,p=2,1s", "not a number from 0 to 1"),
            ("tail:10ms,1s", "three parts"),
            ("pareto:1ms", "unknown distribution `pareto`"),
            ("10h", "longer than the limit"),
        ];
        for (spec, want) in cases {
            let err = spec.parse::<LatencySpec>().unwrap_err().to_string();
            assert!(err.contains(want), "{spec}: {err}");
            assert!(
                err.contains("uniform:20ms..80ms"),
                "{spec}: no example in {err}"
            );
        }
    }

    #[test]
    fn samples_follow_the_spec() {
        let mut rng = StdRng::seed_from_u64(7);
        let uniform: LatencySpec = "uniform:20ms..80ms".parse().unwrap();
        assert!(
            (0..1000)
                .map(|_| uniform.sample(&mut rng))
                .all(|d| d >= ms(20) && d <= ms(80))
        );

        let tail: LatencySpec = "tail:10ms,p=0.1,1s".parse().unwrap();
        let slow = (0..10_000)
            .filter(|_| tail.sample(&mut rng) == ms(1000))
            .count();
        assert!(
            (800..1200).contains(&slow),
            "{slow} slow calls of 10000 at p=0.1"
        );

        let lognormal: LatencySpec = "lognormal:p50=20ms,p99=200ms".parse().unwrap();
        let mut draws: Vec<Duration> = (0..20_000).map(|_| lognormal.sample(&mut rng)).collect();
        draws.sort();
        let (p50, p99) = (draws[10_000], draws[19_800]);
        assert!(p50 > ms(18) && p50 < ms(22), "p50 {p50:?}");
        assert!(p99 > ms(160) && p99 < ms(250), "p99 {p99:?}");
    }

    #[test]
    fn means_match_the_distribution() {
        let tail: LatencySpec = "tail:10ms,p=0.01,1s".parse().unwrap();
        assert_eq!(tail.mean(), Duration::from_micros(19_900));
        let uniform: LatencySpec = "uniform:20ms..80ms".parse().unwrap();
        assert_eq!(uniform.mean(), ms(50));
    }

    proptest::proptest! {
        #[test]
        fn parsing_never_panics(s in "\\PC{0,40}") {
            let _ = s.parse::<LatencySpec>();
        }

        #[test]
        fn parsing_structured_garbage_never_panics(
            kind in "(|uniform|lognormal|tail|x):",
            a in "[0-9]{0,12}(ms|s|h|)", b in "[0-9.e-]{0,6}", c in "[0-9]{0,12}(ms|s|)",
            sep in "(\\.\\.|,|,p=|,p50=|=)"
        ) {
            let spec = format!("{kind}{a}{sep}{b}{sep}{c}");
            if let Ok(parsed) = spec.parse::<LatencySpec>() {
                let mut rng = StdRng::seed_from_u64(1);
                proptest::prop_assert!(parsed.sample(&mut rng) <= MAX_LATENCY);
            }
        }
    }
}
