//! One snapshot as people read it: a line for the whole aggregator, then a table with a row per
//! backend, `-` where the interval had nothing to measure.

use std::fmt::Write as _;
use std::time::SystemTime;

use super::rates::{BackendRow, Snapshot};
use crate::report::{ms, thousands};

const COLUMNS: [&str; 11] = [
    "backend",
    "calls/s",
    "errors",
    "p50",
    "p99",
    "limit",
    "in flight",
    "shed",
    "retries",
    "hedges",
    "replicas",
];

/// The snapshot taken at `at`, as lines of text ending in a newline.
pub fn render(at: SystemTime, s: &Snapshot) -> String {
    let mut out = format!(
        "{}  calls {}/s  errors {}  shed {}  (last {:.1}s)\n",
        humantime::format_rfc3339_seconds(at),
        thousands(s.calls_per_sec, 1),
        percent(s.error_rate, 1),
        thousands(s.shed, 0),
        s.secs,
    );
    let rows: Vec<[String; 11]> = s.backends.iter().map(cells).collect();
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].chars().count())
            .chain([COLUMNS[i].len()])
            .max()
            .unwrap_or(0)
    };
    let widths: Vec<usize> = (0..COLUMNS.len()).map(width).collect();
    let header = COLUMNS.map(str::to_owned);
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            let w = widths[i];
            let _ = match i {
                0 => write!(line, "{cell:<w$}"),
                10 => write!(line, "  {cell}"),
                _ => write!(line, "  {cell:>w$}"),
            };
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn cells(b: &BackendRow) -> [String; 11] {
    let whole = |x: Option<f64>| x.map_or("-".to_owned(), |x| thousands(x, 0));
    let seconds = |x: Option<f64>| x.map_or("-".to_owned(), |x| ms(x * 1e3));
    let replicas: Vec<String> = b
        .replicas
        .iter()
        .map(|(addr, share)| format!("{addr} {}", percent(*share, 0)))
        .collect();
    [
        b.name.clone(),
        thousands(b.calls_per_sec, 1),
        percent(b.error_rate, 1),
        seconds(b.p50),
        seconds(b.p99),
        whole(b.limit),
        whole(b.in_flight),
        thousands(b.shed, 0),
        thousands(b.retries, 0),
        thousands(b.hedges, 0),
        replicas.join(", "),
    ]
}

/// `4.0%`, or `-` for no share at all.
fn percent(share: Option<f64>, decimals: usize) -> String {
    share.map_or("-".to_owned(), |s| format!("{:.decimals$}%", s * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_row_per_backend_and_dashes_for_what_had_no_calls() {
        let row = |name: &str, rate, p: Option<f64>| BackendRow {
            name: name.into(),
            calls_per_sec: rate,
            error_rate: p.map(|_| 0.04),
            p50: p,
            p99: p.map(|p| p * 4.0),
            limit: Some(32.0),
            in_flight: Some(7.0),
            shed: 3.0,
            retries: 3.0,
            hedges: 1.0,
            replicas: vec![
                ("10.0.0.1:50051".into(), p.map(|_| 0.48)),
                ("10.0.0.2:50051".into(), p.map(|_| 0.52)),
            ],
        };
        let s = Snapshot {
            secs: 2.0,
            calls_per_sec: 1234.5,
            error_rate: Some(0.1),
            shed: 2.0,
            backends: vec![row("search", 50.0, Some(0.00625)), row("ads", 0.0, None)],
        };
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let text = render(at, &s);
        let want = "\
2027-01-15T08:00:00Z  calls 1,234.5/s  errors 10.0%  shed 2  (last 2.0s)
backend  calls/s  errors     p50     p99  limit  in flight  shed  retries  hedges  replicas
search      50.0    4.0%  6.25ms  25.0ms     32          7     3        3       1  10.0.0.1:50051 48%, 10.0.0.2:50051 52%
ads          0.0       -       -       -     32          7     3        3       1  10.0.0.1:50051 -, 10.0.0.2:50051 -
";
        assert_eq!(text, want, "\n{text}");
    }
}
