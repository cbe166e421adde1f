//! `overload`'s tables: a line per step, a line per slowdown.

use aggregator::client::limit::control::OPEN;

use crate::model::{OverloadStep, Slowdown};
use crate::report::{ms, thousands};

/// A limit as the tables show it: `open` for an adaptive one that refuses nothing.
fn show_limit(limit: f64) -> String {
    if limit >= OPEN as f64 {
        "open".into()
    } else {
        format!("{limit:.0}")
    }
}

pub(super) const STEP_HEADER: &str = "policy    offered     calls/s good   good/capacity  shed   degraded  failed  admitted p50  admitted p99  limit   rss";

pub(super) fn print_step(s: &OverloadStep) {
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    println!(
        "{:<9} {:<11} {:<14} {:<14} {:<6} {:<9} {:<7} {:<13} {:<13} {:<7} {}",
        s.policy,
        format!("{}x {}/s", s.multiple, thousands(s.offered_per_sec, 0)),
        thousands(s.goodput_per_sec, 1),
        pct(s.goodput_share),
        pct(s.shed_share),
        pct(s.degraded_share),
        pct(s.failed_share),
        ms(s.admitted_p50_ms),
        ms(s.admitted_p99_ms),
        show_limit(s.limit),
        s.rss_mib.map_or("-".into(), |m| format!("{m:.0} MiB")),
    );
}

pub(super) const SLOWDOWN_HEADER: &str = "slowdown  offered   limit before -> after  settled after  admitted p99 before -> after  good calls/s before -> after";

pub(super) fn print_slowdown(s: &Slowdown) {
    println!(
        "{:<9} {:<9} {:<22} {:<14} {:<29} {} -> {}",
        s.policy,
        format!("{}/s", thousands(s.offered_per_sec, 0)),
        format!(
            "{} -> {}",
            show_limit(s.limit_before),
            show_limit(s.limit_after)
        ),
        match (s.settled_after_s, s.policy.as_str()) {
            (Some(t), _) => format!("{t:.2}s"),
            (None, "fixed") => "-".into(),
            (None, _) => "not settled".into(),
        },
        format!(
            "{} -> {}",
            ms(s.admitted_p99_before_ms),
            ms(s.admitted_p99_after_ms)
        ),
        thousands(s.goodput_before_per_sec, 1),
        thousands(s.goodput_after_per_sec, 1),
    );
}
