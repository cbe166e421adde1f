//! Flag parsers shared by the binaries, so every duration flag reads the same way (`200ms`, `2s`,
//! `1m 30s`) and says the same thing when it is wrong.

use std::time::Duration;

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
