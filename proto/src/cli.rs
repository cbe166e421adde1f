//! Flag parsers and values shared by the binaries, so every duration flag reads the same way
//! (`200ms`, `2s`, `1m 30s`) and says the same thing when it is wrong, and `--mode` and
//! `--fanout` mean the same in the servers and the loadgen.

use std::time::Duration;

use crate::v1::{Fanout, Mode};
use clap::ValueEnum;

/// A duration flag's value: parsed and shown in `--help` as people write it (`200ms`, `2s`), so
/// a flag's default can come from a `Config::default()` (`default_value_t`) rather than from a
/// string that could drift from it.
pub type HumanDuration = humantime::Duration;

/// [`duration`] for a flag of type [`HumanDuration`].
pub fn human_duration(s: &str) -> Result<HumanDuration, String> {
    duration(s).map(Into::into)
}

/// [`positive_duration`] for a flag of type [`HumanDuration`].
pub fn human_positive_duration(s: &str) -> Result<HumanDuration, String> {
    positive_duration(s).map(Into::into)
}

/// Parses a human duration such as `200ms` or `2s` (see `humantime`).
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration ({e}); write it like `200ms` or `2s`"))
}

/// A duration that must be above zero: a zero timeout or deadline can never be met.
pub fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err(format!(
            "`{s}` is zero; it must be above zero, e.g. `200ms`"
        )),
        d => Ok(d),
    }
}

/// Formats a duration for people: `203.9ms`, `1.2s`.
pub fn fmt_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1000.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{:.2}s", ms / 1e3)
    }
}

/// `--mode`: how a call waits out its latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// An async sleep (a timer future, like tokio::time::sleep but to the microsecond): waits
    /// overlap, a worker serves others meanwhile (asyncio.sleep).
    Async,
    /// std::thread::sleep ON the async worker, on purpose: the `time.sleep` inside `async def`
    /// mistake. Each waiting call holds a whole worker; health checks starve.
    Blocking,
    /// std::thread::sleep on tokio's blocking thread pool (spawn_blocking), like FastAPI's
    /// threadpool for plain `def` endpoints.
    SpawnBlocking,
    /// Burn CPU time for the latency on the blocking pool, one thread per core at most (like
    /// ProcessPoolExecutor): CPU-bound work, about cores/latency calls/s.
    Cpu,
}

impl From<Mode> for ModeArg {
    /// `Unspecified` means the default, `async`.
    fn from(m: Mode) -> ModeArg {
        match m {
            Mode::Async | Mode::Unspecified => ModeArg::Async,
            Mode::Blocking => ModeArg::Blocking,
            Mode::SpawnBlocking => ModeArg::SpawnBlocking,
            Mode::Cpu => ModeArg::Cpu,
        }
    }
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Async => Mode::Async,
            ModeArg::Blocking => Mode::Blocking,
            ModeArg::SpawnBlocking => Mode::SpawnBlocking,
            ModeArg::Cpu => Mode::Cpu,
        }
    }
}

/// `--fanout`: how the aggregator waits for its backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FanoutArg {
    /// All backends at once; a call takes about as long as its slowest backend (asyncio.gather).
    Concurrent,
    /// One after another; a call takes the sum of its backends' latencies.
    Sequential,
    /// One after another, each waited for by BLOCKING the async worker thread, on purpose: the
    /// "sync HTTP client inside async def" mistake.
    Blocking,
}

impl From<Fanout> for FanoutArg {
    /// `Unspecified` means the default, `concurrent`.
    fn from(f: Fanout) -> FanoutArg {
        match f {
            Fanout::Concurrent | Fanout::Unspecified => FanoutArg::Concurrent,
            Fanout::Sequential => FanoutArg::Sequential,
            Fanout::Blocking => FanoutArg::Blocking,
        }
    }
}

impl From<FanoutArg> for Fanout {
    fn from(f: FanoutArg) -> Fanout {
        match f {
            FanoutArg::Concurrent => Fanout::Concurrent,
            FanoutArg::Sequential => Fanout::Sequential,
            FanoutArg::Blocking => Fanout::Blocking,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_human_durations() {
        assert_eq!(duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(duration(" 2s "), Ok(Duration::from_secs(2)));
        assert!(
            duration("fast")
                .unwrap_err()
                .contains("`fast` is not a duration")
        );
        assert!(positive_duration("0s").unwrap_err().contains("zero"));
    }

    #[test]
    fn formats_for_people() {
        assert_eq!(fmt_duration(Duration::from_micros(203_900)), "203.9ms");
        assert_eq!(fmt_duration(Duration::from_millis(1200)), "1.20s");
    }
}
