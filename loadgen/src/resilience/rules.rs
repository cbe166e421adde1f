//! The rules the aggregator's defaults must keep, as a function over the cells: each rule a
//! [`Verdict`] with a sentence per cell that breaks it. The full matrix checks them at the
//! issue's bounds ([`Bounds::issue`]); the test suite's short form at looser ones of its own,
//! since a short debug run on a shared machine measures the same behaviour less precisely.
//!
//! A rule looks only at the cells it needs; one whose cells were not measured says nothing
//! (SKIP), so a filtered run checks what it measured.

use super::cell::{Cell, Verdict};
use super::conditions::{by_name, is_fault, overloaded};
use crate::cli::{Condition, Configuration};
use crate::resilience::configurations;

/// How strict each rule is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bounds {
    /// Calls the defaults may lose (failed, unanswered, or degraded where nothing makes parts
    /// fail) where nothing is overloaded, as a share of the calls due.
    pub loss: f64,
    /// The same on a cold start and across a re-measurement of the backends' latency
    /// (latency-doubling).
    pub loss_cold: f64,
    /// A silent or refusing backend: good calls' p50 at most this many times the healthy
    /// backends' latency.
    pub broken_p50: f64,
    /// In a fault row, the defaults' goodput at least this share of the best column's.
    pub near_best: f64,
    /// At 10x overload: goodput at least this share of the capacity...
    pub overload_goodput: f64,
    /// ...and admitted calls' p99 at most this many times the backends' latency.
    pub overload_p99: f64,
    /// Hedging on a heavy tail: p99 at least this many times lower than without...
    pub hedge_cut: f64,
    /// ...for at most this share of extra backend calls.
    pub hedge_extra: f64,
}

impl Bounds {
    /// The issue's bounds.
    pub fn issue() -> Self {
        Bounds {
            loss: 0.001,
            loss_cold: 0.0,
            broken_p50: 2.0,
            near_best: 0.98,
            overload_goodput: 0.9,
            overload_p99: 2.5,
            hedge_cut: 10.0,
            hedge_extra: 0.05,
        }
    }
}

/// Every rule, checked over `cells`.
pub fn check(cells: &[Cell], b: &Bounds) -> Vec<Verdict> {
    vec![
        no_loss(cells, b),
        broken_backend(cells, b),
        near_best(cells, b),
        overload(cells, b),
        hedging(cells, b),
        kill_replica(cells),
    ]
}

fn condition(c: &Cell) -> Option<Condition> {
    by_name(&c.scenario)
}

fn is(c: &Cell, configuration: Configuration) -> bool {
    c.config == configurations::name(configuration)
}

/// The defaults' cells of these rows.
fn defaults_in(cells: &[Cell], rows: impl Fn(Condition) -> bool) -> Vec<&Cell> {
    cells
        .iter()
        .filter(|c| is(c, Configuration::Defaults) && condition(c).is_some_and(&rows))
        .collect()
}

fn pct(x: f64) -> String {
    format!("{:.2}%", x * 100.0)
}

fn verdict(rule: &str, asks: &str, checked: usize, violations: Vec<String>) -> Verdict {
    Verdict {
        rule: rule.into(),
        asks: asks.into(),
        checked,
        violations,
    }
}

/// Where nothing is overloaded, the defaults lose no call.
fn no_loss(cells: &[Cell], b: &Bounds) -> Verdict {
    let checked = defaults_in(cells, |r| !overloaded(r));
    let violations = checked
        .iter()
        .filter_map(|c| {
            let row = condition(c)?;
            // Where backends fail by design, a part failing after its retries is their doing.
            let degraded = match row {
                Condition::Failures20 => 0,
                _ => c.degraded,
            };
            let bound = match row {
                Condition::ColdStart | Condition::LatencyDoubling => b.loss_cold,
                _ => b.loss,
            };
            let lost = c.share(c.lost() + degraded);
            (lost > bound).then(|| {
                format!(
                    "{}: lost {} of {} calls ({}; errors {:?}, unanswered {}, degraded {}), \
                     more than {}",
                    c.scenario,
                    c.lost() + degraded,
                    c.due(),
                    pct(lost),
                    c.errors,
                    c.unanswered,
                    degraded,
                    pct(bound)
                )
            })
        })
        .collect();
    verdict(
        "no-loss",
        "where nothing is overloaded, the defaults lose no call: errors, unanswered and \
         degraded calls at most 0.1% (none on a cold start or across a re-measurement)",
        checked.len(),
        violations,
    )
}

/// A silent or refusing backend costs its own part only, answered fast.
fn broken_backend(cells: &[Cell], b: &Bounds) -> Verdict {
    let checked = defaults_in(cells, |r| {
        matches!(r, Condition::BackendSilent | Condition::BackendRefusing)
    });
    let mut violations = Vec::new();
    for c in &checked {
        if c.lost() > 0 {
            violations.push(format!(
                "{}: {} whole calls failed or unanswered ({:?}), not 0",
                c.scenario,
                c.lost(),
                c.errors
            ));
        }
        if c.p50_ms > b.broken_p50 * c.latency_ms {
            violations.push(format!(
                "{}: good calls' p50 {:.1} ms, more than {}x the healthy backends' {:.0} ms",
                c.scenario, c.p50_ms, b.broken_p50, c.latency_ms
            ));
        }
    }
    verdict(
        "broken-backend",
        "a silent or refusing backend: no whole call fails, and p50 stays within 2x the \
         healthy backends' latency",
        checked.len(),
        violations,
    )
}

/// In every fault row, the defaults come within a hair of the best column.
fn near_best(cells: &[Cell], b: &Bounds) -> Verdict {
    let checked = defaults_in(cells, is_fault);
    let mut compared = 0;
    let mut violations = Vec::new();
    for d in &checked {
        let row: Vec<&Cell> = cells.iter().filter(|c| c.scenario == d.scenario).collect();
        let Some(best) = row
            .iter()
            .filter(|c| !is(c, Configuration::Defaults))
            .max_by(|a, b| a.goodput_per_s.total_cmp(&b.goodput_per_s))
        else {
            continue;
        };
        compared += 1;
        if d.goodput_per_s < b.near_best * best.goodput_per_s {
            violations.push(format!(
                "{}: goodput {:.1}/s, {} of {}'s {:.1}/s",
                d.scenario,
                d.goodput_per_s,
                pct(d.goodput_per_s / best.goodput_per_s.max(1e-9)),
                best.config,
                best.goodput_per_s
            ));
        }
    }
    verdict(
        "near-best",
        "in every fault row the defaults' goodput is within 2% of the best configuration's",
        compared,
        violations,
    )
}

/// Ten times the capacity: the defaults serve nearly all of it, and fast.
fn overload(cells: &[Cell], b: &Bounds) -> Verdict {
    let checked = defaults_in(cells, |r| r == Condition::Overload10x);
    let mut violations = Vec::new();
    for c in &checked {
        let capacity = c.capacity_per_s.unwrap_or(0.0);
        if c.goodput_per_s < b.overload_goodput * capacity {
            violations.push(format!(
                "{}: goodput {:.1}/s, {} of the capacity ({capacity:.0}/s)",
                c.scenario,
                c.goodput_per_s,
                pct(c.goodput_per_s / capacity.max(1e-9))
            ));
        }
        if c.admitted_p99_ms > b.overload_p99 * c.latency_ms {
            violations.push(format!(
                "{}: admitted p99 {:.1} ms, more than {}x the backends' {:.0} ms",
                c.scenario, c.admitted_p99_ms, b.overload_p99, c.latency_ms
            ));
        }
    }
    verdict(
        "overload",
        "at 10x overload, goodput >= 90% of capacity and admitted p99 <= 2.5x the backends' \
         latency",
        checked.len(),
        violations,
    )
}

/// Hedging (added to the defaults) cuts a heavy tail's p99 for a few extra backend calls.
fn hedging(cells: &[Cell], b: &Bounds) -> Verdict {
    let in_row = |configuration| {
        cells
            .iter()
            .find(|c| condition(c) == Some(Condition::HeavyTail) && is(c, configuration))
    };
    let (Some(without), Some(with)) = (
        in_row(Configuration::Defaults),
        in_row(Configuration::DefaultsHedge),
    ) else {
        return verdict("hedging", HEDGING, 0, Vec::new());
    };
    let mut violations = Vec::new();
    if with.p99_ms * b.hedge_cut > without.p99_ms {
        violations.push(format!(
            "{}: p99 {:.1} ms with hedging against {:.1} ms without: {:.1}x lower, not {}x",
            with.scenario,
            with.p99_ms,
            without.p99_ms,
            without.p99_ms / with.p99_ms.max(1e-9),
            b.hedge_cut
        ));
    }
    if with.extra_backend_calls > b.hedge_extra {
        violations.push(format!(
            "{}: hedging cost {} extra backend calls, more than {}",
            with.scenario,
            pct(with.extra_backend_calls),
            pct(b.hedge_extra)
        ));
    }
    verdict("hedging", HEDGING, 1, violations)
}

const HEDGING: &str = "on a heavy tail, defaults+hedge's p99 is >= 10x lower than the \
                       defaults' for <= 5% extra backend calls";

/// A replica killed under load costs no whole call.
fn kill_replica(cells: &[Cell]) -> Verdict {
    let checked = defaults_in(cells, |r| r == Condition::ReplicaKilled);
    let violations = checked
        .iter()
        .filter(|c| c.lost() > 0)
        .map(|c| {
            format!(
                "{}: {} whole calls failed or unanswered ({:?}), not 0",
                c.scenario,
                c.lost(),
                c.errors
            )
        })
        .collect();
    verdict(
        "kill-replica",
        "one replica of three killed under load: no whole call fails",
        checked.len(),
        violations,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cell(scenario: &str, config: &str) -> Cell {
        Cell {
            scenario: scenario.into(),
            config: config.into(),
            calls: 1000,
            errors: BTreeMap::new(),
            degraded: 0,
            good: 1000,
            unanswered: 0,
            offered_per_s: 250.0,
            goodput_per_s: 250.0,
            capacity_per_s: Some(500.0),
            p50_ms: 21.0,
            p99_ms: 23.0,
            p999_ms: 25.0,
            admitted_p99_ms: 23.0,
            extra_backend_calls: 0.0,
            retries: 0,
            hedges: 0,
            hedges_refused: 0,
            latency_ms: 20.0,
            broken_backend: None,
            window_s: 4.0,
        }
    }

    fn outcome(verdicts: &[Verdict], rule: &str) -> &'static str {
        verdicts.iter().find(|v| v.rule == rule).unwrap().outcome()
    }

    #[test]
    fn healthy_cells_pass_and_unmeasured_rules_skip() {
        let cells = [
            cell("healthy-50", "defaults"),
            cell("failures-20", "defaults"),
        ];
        let v = check(&cells, &Bounds::issue());
        assert_eq!(outcome(&v, "no-loss"), "PASS");
        for rule in [
            "broken-backend",
            "near-best",
            "overload",
            "hedging",
            "kill-replica",
        ] {
            assert_eq!(outcome(&v, rule), "SKIP", "{rule}");
        }
    }

    #[test]
    fn a_refusal_on_a_cold_start_fails_where_one_in_a_thousand_elsewhere_does_not() {
        let mut cold = cell("cold-start", "defaults");
        cold.errors.insert("RESOURCE_EXHAUSTED".into(), 1);
        let mut warm = cell("healthy-80", "defaults");
        warm.errors.insert("RESOURCE_EXHAUSTED".into(), 1);
        let v = check(&[warm.clone()], &Bounds::issue());
        assert_eq!(outcome(&v, "no-loss"), "PASS");
        let v = check(&[warm, cold], &Bounds::issue());
        let no_loss = v.iter().find(|v| v.rule == "no-loss").unwrap();
        assert_eq!(no_loss.violations.len(), 1, "{no_loss:?}");
        assert!(no_loss.violations[0].starts_with("cold-start"));
    }

    #[test]
    fn degraded_calls_are_loss_unless_the_backends_fail_by_design() {
        let mut slow = cell("replica-slow", "defaults");
        slow.degraded = 5;
        let mut failing = cell("failures-20", "defaults");
        failing.degraded = 30;
        let v = check(&[slow, failing], &Bounds::issue());
        let no_loss = v.iter().find(|v| v.rule == "no-loss").unwrap();
        assert_eq!(no_loss.violations.len(), 1);
        assert!(no_loss.violations[0].starts_with("replica-slow"));
    }

    #[test]
    fn the_defaults_are_held_against_the_best_column_of_their_row() {
        let mut d = cell("backend-silent", "defaults");
        d.goodput_per_s = 240.0;
        d.p50_ms = 1000.0;
        let off = cell("backend-silent", "off");
        let v = check(&[d, off], &Bounds::issue());
        assert_eq!(outcome(&v, "near-best"), "FAIL");
        let broken = v.iter().find(|v| v.rule == "broken-backend").unwrap();
        assert!(broken.violations[0].contains("p50 1000.0 ms"), "{broken:?}");
    }

    #[test]
    fn overload_and_hedging_have_their_bounds() {
        let mut over = cell("overload-10x", "defaults");
        over.goodput_per_s = 460.0;
        over.admitted_p99_ms = 49.0;
        let mut tail = cell("heavy-tail", "defaults");
        tail.p99_ms = 500.0;
        let mut hedged = cell("heavy-tail", "defaults+hedge");
        hedged.p99_ms = 40.0;
        hedged.extra_backend_calls = 0.04;
        let v = check(
            &[over.clone(), tail.clone(), hedged.clone()],
            &Bounds::issue(),
        );
        assert_eq!(outcome(&v, "overload"), "PASS");
        assert_eq!(outcome(&v, "hedging"), "PASS");
        over.admitted_p99_ms = 51.0;
        hedged.p99_ms = 60.0;
        let v = check(&[over, tail, hedged], &Bounds::issue());
        assert_eq!(outcome(&v, "overload"), "FAIL");
        assert_eq!(outcome(&v, "hedging"), "FAIL");
    }
}
