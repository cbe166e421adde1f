//! Reading the caller's deadline: the `grpc-timeout` request header of the gRPC over HTTP/2
//! spec (`<digits><unit>`, at most 8 digits, unit one of `H M S m u n`).

use std::time::Duration;

/// The caller's `grpc-timeout`, if it sent a valid one.
pub fn grpc_timeout<T>(req: &tonic::Request<T>) -> Option<Duration> {
    parse(req.metadata().get("grpc-timeout")?.to_str().ok()?)
}

/// Parses a `grpc-timeout` value such as `200m` (200 ms).
pub fn parse(value: &str) -> Option<Duration> {
    let split = value.len().checked_sub(1)?;
    let (digits, unit) = value.split_at(split);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Writes `d` as a `grpc-timeout` value in the finest unit whose 8 digits hold it, rounded
/// down: a deadline passed on is never longer than the time there is.
pub fn format(d: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let (us, ms) = (d.as_micros(), d.as_millis());
    if us <= MAX {
        format!("{us}u")
    } else if ms <= MAX {
        format!("{ms}m")
    } else {
        format!("{}S", d.as_secs().min(MAX as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_units() {
        assert_eq!(parse("200m"), Some(Duration::from_millis(200)));
        assert_eq!(parse("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse("999999u"), Some(Duration::from_micros(999_999)));
        assert_eq!(parse("m"), None);
        assert_eq!(parse("123456789m"), None, "more than 8 digits");
        assert_eq!(parse("12x"), None);
        assert_eq!(parse(""), None);
    }

    #[test]
    fn formats_what_it_parses() {
        for d in [
            Duration::from_millis(1),
            Duration::from_secs(5),
            Duration::from_secs(99_999),
        ] {
            assert_eq!(parse(&format(d)), Some(d));
        }
        assert_eq!(
            format(Duration::from_nanos(1_500_900)),
            "1500u",
            "rounded down"
        );
        assert_eq!(format(Duration::from_secs(200)), "200000m");
        assert_eq!(format(Duration::from_secs(200_000)), "200000S");
    }
}
