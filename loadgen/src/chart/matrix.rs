//! `compare`'s chart: a row per configuration, its calls/s against theory beside its latency.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use super::create_parent;
use super::style::{BAR, P50, P99, THEORY, draw_legend};
use crate::model::{CompareReport, Row};

/// Writes the chart of `report` to `path` (SVG), creating its folder.
pub fn write_svg(path: &Path, report: &CompareReport) -> anyhow::Result<()> {
    create_parent(path)?;
    draw(path, report).map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

/// The vertical axis both panels share: a slot per row, rows top to bottom in the order
/// measured.
struct Slots {
    /// The rows, at least 1.
    n: usize,
    /// Each row's label, `fanout / backend mode`.
    labels: Vec<String>,
}

impl Slots {
    fn of(rows: &[Row]) -> Self {
        Slots {
            n: rows.len().max(1),
            labels: rows
                .iter()
                .map(|r| format!("{} / {}", r.fanout, r.backend_mode))
                .collect(),
        }
    }

    /// The range to segment: `(0..m).into_segmented()` has m + 1 slots; ask for exactly n.
    fn range(&self) -> std::ops::Range<usize> {
        0..self.n.saturating_sub(1).max(1)
    }

    /// The row drawn at `v`: category i is drawn at the top for i = 0.
    fn row_at(&self, v: &SegmentValue<usize>) -> Option<usize> {
        match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => self.n.checked_sub(i + 1),
            SegmentValue::Last => None,
        }
    }

    /// The label of the row drawn at `v`.
    fn label(&self, v: &SegmentValue<usize>) -> String {
        self.row_at(v)
            .and_then(|i| self.labels.get(i).cloned())
            .unwrap_or_default()
    }

    /// The slot row `i` is drawn in.
    fn slot(&self, i: usize) -> usize {
        self.n - 1 - i
    }
}

fn draw(path: &Path, report: &CompareReport) -> Result<(), Box<dyn std::error::Error>> {
    let rows = &report.scenarios;
    let slots = Slots::of(rows);
    let root = SVGBackend::new(path, (1400, 120 + 42 * slots.n as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "fanout: {} callers, {} backends at {}, {} backend / {} aggregator workers, {} cores",
        report.concurrency,
        report.backends,
        report.latency,
        report.backend_workers,
        report.aggregator_workers,
        report.cores
    );
    let root = root.titled(&title, ("sans-serif", 22))?;
    let (left, right) = root.split_horizontally(820);
    draw_throughput(&left, rows, &slots)?;
    draw_latency(&right, rows, &slots)?;
    root.present()?;
    Ok(())
}

/// The left panel: throughput against theory, horizontal bars on a log scale, the efficiency
/// beside each bar.
fn draw_throughput(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    rows: &[Row],
    slots: &Slots,
) -> Result<(), Box<dyn std::error::Error>> {
    let top = rows
        .iter()
        .flat_map(|r| [r.calls_per_sec, r.theory_calls_per_sec])
        .fold(10.0f64, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(area)
        .caption(
            "calls/s: measured (bars) against theory (red)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(190)
        .build_cartesian_2d((1.0f64..top).log_scale(), slots.range().into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(slots.n)
        .y_label_style(("sans-serif", 15))
        .y_label_formatter(&|v| slots.label(v))
        .x_desc("calls per second (log scale)")
        .draw()?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let mut bar = Rectangle::new(
                [
                    (1.0, SegmentValue::Exact(slots.slot(i))),
                    (
                        r.calls_per_sec.max(1.0),
                        SegmentValue::Exact(slots.slot(i) + 1),
                    ),
                ],
                BAR.filled(),
            );
            bar.set_margin(5, 5, 0, 0);
            bar
        }))?
        .label("measured")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], BAR.filled()));
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            PathElement::new(
                vec![
                    (r.theory_calls_per_sec, SegmentValue::Exact(slots.slot(i))),
                    (
                        r.theory_calls_per_sec,
                        SegmentValue::Exact(slots.slot(i) + 1),
                    ),
                ],
                THEORY.stroke_width(3),
            )
        }))?
        .label("theory: the Little's-law bound")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 12, y)], THEORY.stroke_width(3)));
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        Text::new(
            format!("{:.0}%", r.efficiency * 100.0),
            (
                r.calls_per_sec.max(1.0) * 1.08,
                SegmentValue::CenterOf(slots.slot(i)),
            ),
            ("sans-serif", 13).into_font(),
        )
    }))?;
    draw_legend(&mut chart, SeriesLabelPosition::LowerRight)
}

/// The right panel: each row's p50 and p99 latency, dots on a log scale.
fn draw_latency(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    rows: &[Row],
    slots: &Slots,
) -> Result<(), Box<dyn std::error::Error>> {
    let (lo, hi) = rows
        .iter()
        .flat_map(|r| [r.p50_ms, r.p99_ms])
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = if lo == f64::MAX { 0.1 } else { lo / 2.0 };
    let mut chart = ChartBuilder::on(area)
        .caption("latency: p50 and p99", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d((lo..hi * 2.0).log_scale(), slots.range().into_segmented())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(slots.n)
        .y_label_formatter(&|_| String::new())
        .x_desc("milliseconds (log scale)")
        .draw()?;
    for (color, name, pick) in [
        (P50, "p50", (|r: &Row| r.p50_ms) as fn(&Row) -> f64),
        (P99, "p99", |r: &Row| r.p99_ms),
    ] {
        chart
            .draw_series(
                rows.iter()
                    .enumerate()
                    .filter(|(_, r)| pick(r) > 0.0)
                    .map(|(i, r)| {
                        Circle::new(
                            (pick(r), SegmentValue::CenterOf(slots.slot(i))),
                            6,
                            color.filled(),
                        )
                    }),
            )?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
}
