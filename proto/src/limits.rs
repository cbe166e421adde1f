//! The limits a `fanout.v1` request must keep, and their checks, in one place for both servers
//! (and for the loadgen, which asks for the longest deadline the aggregator takes).
//!
//! Each check says what is wrong in words a caller can act on; the servers turn it into
//! `INVALID_ARGUMENT`.

use std::time::Duration;

use crate::v1::{Fanout, Mode};

/// Largest request message either server decodes, in bytes (a query, plus backend names).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The longest query accepted, in bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// The longest `delay_ms` override honoured: a 10-hour delay is a mistake, not a test.
pub const MAX_DELAY_MS: u32 = 60_000;
/// The shortest timeout or deadline that leaves room for one backend attempt on loopback.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(5);
/// The longest timeout or deadline accepted; longer ones are mistakes.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a request breaks a limit; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Invalid {}

/// The query is at most [`MAX_QUERY_BYTES`].
pub fn query(query: &str) -> Result<(), Invalid> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(Invalid(format!(
            "query is {} bytes; the limit is {MAX_QUERY_BYTES}",
            query.len()
        )));
    }
    Ok(())
}

/// A `delay_ms` override is at most [`MAX_DELAY_MS`].
pub fn delay_ms(ms: Option<u32>) -> Result<(), Invalid> {
    match ms {
        Some(ms) if ms > MAX_DELAY_MS => Err(Invalid(format!(
            "delay_ms {ms} is over the limit of {MAX_DELAY_MS}"
        ))),
        _ => Ok(()),
    }
}

/// A `mode` override: absent or unspecified (`None`: the server's own), or a known [`Mode`].
pub fn mode(value: Option<i32>) -> Result<Option<Mode>, Invalid> {
    match value.map(Mode::try_from) {
        None | Some(Ok(Mode::Unspecified)) => Ok(None),
        Some(Ok(m)) => Ok(Some(m)),
        Some(Err(_)) => Err(Invalid(format!(
            "mode {} is not a known Mode (1 async, 2 blocking, 3 spawn-blocking, 4 cpu)",
            value.unwrap_or_default()
        ))),
    }
}

/// A `fanout` override: absent or unspecified (`None`: the server's own), or a known [`Fanout`].
pub fn fanout(value: Option<i32>) -> Result<Option<Fanout>, Invalid> {
    match value.map(Fanout::try_from) {
        None | Some(Ok(Fanout::Unspecified)) => Ok(None),
        Some(Ok(f)) => Ok(Some(f)),
        Some(Err(_)) => Err(Invalid(format!(
            "fanout {} is not a known Fanout (1 concurrent, 2 sequential, 3 blocking)",
            value.unwrap_or_default()
        ))),
    }
}

/// A timeout field in milliseconds: absent, or within [`MIN_TIMEOUT`]`..=`[`MAX_TIMEOUT`].
pub fn timeout_ms(field: &str, ms: Option<u32>) -> Result<Option<Duration>, Invalid> {
    let Some(ms) = ms else { return Ok(None) };
    let d = Duration::from_millis(ms.into());
    if d < MIN_TIMEOUT {
        return Err(Invalid(format!(
            "{field} {ms} is below the {} ms minimum a backend attempt needs",
            MIN_TIMEOUT.as_millis()
        )));
    }
    if d > MAX_TIMEOUT {
        return Err(Invalid(format!(
            "{field} {ms} is over the limit of {} ms",
            MAX_TIMEOUT.as_millis()
        )));
    }
    Ok(Some(d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_check_names_the_field() {
        assert!(
            query(&"x".repeat(5000))
                .unwrap_err()
                .0
                .contains("query is 5000 bytes")
        );
        assert!(query("ok").is_ok());
        assert!(
            delay_ms(Some(60_001))
                .unwrap_err()
                .0
                .contains("delay_ms 60001")
        );
        assert!(delay_ms(Some(60_000)).is_ok() && delay_ms(None).is_ok());
        assert_eq!(mode(Some(3)), Ok(Some(Mode::SpawnBlocking)));
        assert_eq!(mode(Some(0)), Ok(None));
        assert!(
            mode(Some(9))
                .unwrap_err()
                .0
                .contains("mode 9 is not a known Mode")
        );
        assert!(fanout(Some(9)).unwrap_err().0.contains("fanout 9"));
        assert!(
            timeout_ms("deadline_ms", Some(0))
                .unwrap_err()
                .0
                .contains("deadline_ms 0 is below")
        );
        assert!(
            timeout_ms("deadline_ms", Some(u32::MAX))
                .unwrap_err()
                .0
                .contains("over the limit")
        );
        assert_eq!(timeout_ms("x", Some(5)), Ok(Some(MIN_TIMEOUT)));
    }
}
