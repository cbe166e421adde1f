//! The charts, SVGs a person would rather look at than read.
//!
//! `compare`'s: one row per configuration; left, its calls/s as a bar with its theoretical
//! bound as a red tick and the efficiency beside it; right, its p50 and p99 latency. Both on log
//! scales: the configurations differ by two orders of magnitude, which is the point.
//!
//! `run`'s (and `merge`'s): the latency distribution by percentile, the way HdrHistogram plots
//! it: the x axis stretches the tail (90%, 99%, 99.9%, ... equally spaced), where load tests
//! find their trouble.
//!
//! The parts: [`matrix`] draws `compare`'s, [`latency`] `run`'s and `tail`'s, [`overload`]
//! `overload`'s; `style` holds what they share.

use std::path::Path;

use anyhow::Context;

pub mod latency;
pub mod matrix;
pub mod overload;
mod style;

pub use latency::{write_percentiles_svg, write_tail_svg};
pub use matrix::write_svg;
pub use overload::write_overload_svg;

/// Creates the folder `path` goes in, if it has one.
pub(crate) fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    Ok(())
}
