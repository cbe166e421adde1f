//! What `loadgen resilience` prints: a line per cell as it is measured, then the matrix (a
//! row per scenario, a column per configuration, each cell its goodput and good calls' p99),
//! then each rule's PASS or FAIL with the cells that break it.

use super::cell::{Cell, Verdict};
use crate::report::ms;

pub const CELL_HEADER: &str = "scenario          config          calls   offered/s  good/s    good%    errors                          degraded  p50       p99       p99.9     extra calls";

/// One measured cell, in full.
pub fn print_cell(c: &Cell) {
    let errors = match c.error_total() + c.unanswered {
        0 => "-".to_owned(),
        _ => {
            let mut shown: Vec<String> = c
                .errors
                .iter()
                .map(|(code, n)| format!("{code} {n}"))
                .collect();
            if c.unanswered > 0 {
                shown.push(format!("unanswered {}", c.unanswered));
            }
            shown.join(", ")
        }
    };
    println!(
        "{:<17} {:<15} {:<7} {:<10} {:<9} {:<8} {:<31} {:<9} {:<9} {:<9} {:<9} {:+.1}%",
        c.scenario,
        c.config,
        c.calls,
        format!("{:.1}", c.offered_per_s),
        format!("{:.1}", c.goodput_per_s),
        format!("{:.1}%", c.served_share() * 100.0),
        errors,
        c.degraded,
        latency(c.p50_ms, c.good),
        latency(c.p99_ms, c.good),
        latency(c.p999_ms, c.good),
        c.extra_backend_calls * 100.0,
    );
}

/// A good calls' percentile, `-` without good calls.
fn latency(x: f64, good: u64) -> String {
    if good == 0 { "-".into() } else { ms(x) }
}

/// A cell of the matrix: `99.9% 21.3ms`, then `E` if whole calls were lost and `D` if some
/// were degraded.
pub fn compact(c: &Cell) -> String {
    let mut text = format!(
        "{:.1}% {}",
        c.served_share() * 100.0,
        latency(c.p99_ms, c.good)
    );
    if c.lost() > 0 {
        text.push_str(" E");
    }
    if c.degraded > 0 {
        text.push_str(" D");
    }
    text
}

/// The matrix: `rows` down, `columns` across, the cells where measured.
pub fn print_matrix(rows: &[&str], columns: &[&str], cells: &[Cell]) {
    println!(
        "\ngood calls as a share of what could be served (the calls offered, or the capacity \
         when more is offered), and good calls' p99;\nE: whole calls failed or unanswered, \
         D: calls degraded (a part of an unbroken backend missing)"
    );
    let mut header = format!("{:<17}", "scenario");
    for c in columns {
        header.push_str(&format!(" {c:<21}"));
    }
    println!("{}", header.trim_end());
    for row in rows {
        let mut line = format!("{row:<17}");
        for column in columns {
            let text = cells
                .iter()
                .find(|c| c.scenario == *row && c.config == *column)
                .map_or_else(|| "-".to_owned(), compact);
            line.push_str(&format!(" {text:<21}"));
        }
        println!("{}", line.trim_end());
    }
}

/// Each rule's outcome, and a line per cell that breaks it.
pub fn print_verdicts(title: &str, verdicts: &[Verdict]) {
    println!("\n{title}");
    for v in verdicts {
        println!("{}  {}: {}", v.outcome(), v.rule, v.asks);
        for violation in &v.violations {
            println!("        {violation}");
        }
    }
}
