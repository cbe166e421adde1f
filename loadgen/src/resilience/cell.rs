//! The records of `loadgen resilience`, which the measurement makes and the table, the
//! heatmap and the rules read: a [`Cell`] per row and column, and the [`Report`] of them all.
//! Read back too (the test suite checks the rules on the JSON), so every field is both
//! written and read.
//!
//! A call is **good** when its status is OK and every backend the row did not break answered:
//! a broken backend's own part failing is the expected answer, not degradation. **Degraded**:
//! OK, but a part of an unbroken backend failed (it timed out, was refused by a limit, failed).
//! **Errors**: whole calls that failed, by status. Goodput counts good calls only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One row (`scenario`) under one column (`config`), measured on a fresh deployment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Cell {
    pub scenario: String,
    pub config: String,
    /// Calls due in the measured window and answered, whatever the answer.
    pub calls: u64,
    /// Whole calls that failed, by status code name (RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED..).
    pub errors: BTreeMap<String, u64>,
    /// Calls answered OK without the part of some backend the row did not break.
    pub degraded: u64,
    /// Calls answered OK with every part the row did not break: `calls` less errors and
    /// degraded.
    pub good: u64,
    /// Calls due in the window that got no answer at all: not sent (the loadgen's cap on
    /// calls outstanding) or still unanswered when the drain after the window ran out. Lost
    /// too, and in no other count.
    pub unanswered: u64,
    /// Calls due per second of the window (a cold start's burst included).
    pub offered_per_s: f64,
    /// Good calls per second of the window.
    pub goodput_per_s: f64,
    /// What the deployment serves before any fault, in calls/s; `None` without a limit at the
    /// backends.
    pub capacity_per_s: Option<f64>,
    /// Good calls' latency, from each call's due time (an open loop: no coordinated omission).
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// p99 of every call the aggregator admitted (all statuses but RESOURCE_EXHAUSTED): what
    /// a shedding policy promises to keep fast.
    pub admitted_p99_ms: f64,
    /// Backend attempts beyond one per backend per admitted call, as a share of those
    /// (retries and hedges), from the aggregator's Stats around the cell.
    pub extra_backend_calls: f64,
    /// What the extra calls were, from the same Stats: retries, hedges sent, and hedges the
    /// hedge budget refused.
    pub retries: u64,
    pub hedges: u64,
    pub hedges_refused: u64,
    /// The backends' usual latency in this row, in milliseconds.
    pub latency_ms: f64,
    /// The backend the row broke on purpose, if any.
    pub broken_backend: Option<String>,
    /// The measured window, in seconds.
    pub window_s: f64,
}

impl Cell {
    /// Whole calls that failed, every code together.
    pub fn error_total(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Calls lost: failed, or never answered.
    pub fn lost(&self) -> u64 {
        self.error_total() + self.unanswered
    }

    /// Calls the caller asked for in the window: answered or not.
    pub fn due(&self) -> u64 {
        self.calls + self.unanswered
    }

    /// `n` as a share of the calls due; 0 without any.
    pub fn share(&self, n: u64) -> f64 {
        match self.due() {
            0 => 0.0,
            due => n as f64 / due as f64,
        }
    }

    /// Goodput as a share of what could be served: of the calls offered, or of the
    /// capacity when more than it is offered.
    pub fn served_share(&self) -> f64 {
        let servable = match self.capacity_per_s {
            Some(c) => self.offered_per_s.min(c),
            None => self.offered_per_s,
        };
        if servable > 0.0 {
            self.goodput_per_s / servable
        } else {
            0.0
        }
    }
}

/// One rule, checked over the cells.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Verdict {
    /// Its short name, e.g. `no-loss`.
    pub rule: String,
    /// What it asks, in a sentence.
    pub asks: String,
    /// Cells it looked at; 0: none of them was measured, and it says nothing.
    pub checked: usize,
    /// A sentence per cell that breaks it; empty: it holds.
    pub violations: Vec<String>,
}

impl Verdict {
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }

    /// PASS, FAIL, or SKIP when nothing it needs was measured.
    pub fn outcome(&self) -> &'static str {
        match (self.checked, self.passed()) {
            (0, _) => "SKIP",
            (_, true) => "PASS",
            (_, false) => "FAIL",
        }
    }
}

/// The whole `loadgen resilience`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// The backends' latency in every row but heavy-tail, and their capacity.
    pub latency: String,
    pub backend_capacity: u32,
    pub duration_s: f64,
    pub warmup_s: f64,
    /// How long the whole matrix took, in seconds.
    pub wall_s: f64,
    pub interrupted: bool,
    pub cells: Vec<Cell>,
    /// The rules the defaults must keep, at the bounds.
    pub rules: Vec<Verdict>,
}
