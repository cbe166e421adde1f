//! What a configuration's throughput is held against: a bound in calls per second, and what
//! sets it (Little's law and friends; `loadgen`'s `theory` computes them).

use serde::{Deserialize, Serialize};

/// The bound on calls per second, and what sets it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Bound {
    pub calls_per_sec: f64,
    /// What limits throughput.
    pub limit: Limit,
    /// The formula with numbers, e.g. "C/R = 64/0.050s".
    pub formula: String,
    /// R: one call's time when nothing queues, in milliseconds.
    pub call_ms: f64,
}

/// What sets a bound.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub enum Limit {
    #[serde(rename = "callers")]
    Callers,
    #[serde(rename = "rate")]
    Rate,
    #[serde(rename = "backend workers")]
    BackendWorkers,
    #[serde(rename = "aggregator workers")]
    AggregatorWorkers,
    #[serde(rename = "cores")]
    Cores,
    #[serde(rename = "blocking pool")]
    BlockingPool,
}

impl Limit {
    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Callers => "callers",
            Limit::Rate => "rate",
            Limit::BackendWorkers => "backend workers",
            Limit::AggregatorWorkers => "aggregator workers",
            Limit::Cores => "cores",
            Limit::BlockingPool => "blocking pool",
        }
    }

    /// Whether the bound belongs to the load (its callers or rate), so that the bounds of
    /// several loadgens driving one target add up; the others are the target's.
    pub fn is_the_load_s(self) -> bool {
        matches!(self, Limit::Callers | Limit::Rate)
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The machine's cores: K in the bound of CPU-bound configurations.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}
