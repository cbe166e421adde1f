//! The latency-by-percentile charts: `run`'s (and `merge`'s), and `tail`'s a panel per fan-out.

use std::path::Path;

use anyhow::anyhow;
use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::prelude::*;

use super::create_parent;
use super::style::{BAR, SERIES, draw_legend, nines, percentile_label};
use crate::model::{RunReport, TailReport};

/// Writes the latency distribution of `report` (whose histogram is `latency`) to `path` (SVG).
pub fn write_percentiles_svg(
    path: &Path,
    report: &RunReport,
    latency: &Histogram<u64>,
) -> anyhow::Result<()> {
    create_parent(path)?;
    draw_percentiles(path, report, latency)
        .map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

fn draw_percentiles(
    path: &Path,
    report: &RunReport,
    latency: &Histogram<u64>,
) -> Result<(), Box<dyn std::error::Error>> {
    // As far into the tail as the calls reach: 1,000 calls resolve 99.9%, not 99.99%; the
    // maximum is drawn at the right edge.
    let right = (latency.len().max(100) as f64).log10().ceil();
    let points: Vec<(f64, f64)> = latency
        .iter_quantiles(5)
        .map(|v| {
            let x = nines(v.quantile_iterated_to()).min(right);
            (x, v.value_iterated_to() as f64 / 1e3)
        })
        .collect();
    let top = points.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.1;
    let root = SVGBackend::new(path, (1000, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "{} ({}): {} calls at {:.1}/s, {}",
        report.target,
        report.rpc,
        report.calls,
        report.calls_per_sec,
        match report.rate {
            Some(r) => format!("open loop at {r}/s"),
            None => format!("closed loop of {}", report.concurrency),
        }
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 18))
        .margin(16)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..right, 0.0..top)?;
    chart
        .configure_mesh()
        .x_labels(right as usize + 1)
        .x_label_formatter(&percentile_label)
        .x_desc("percentile")
        .y_desc("latency (ms)")
        .draw()?;
    chart.draw_series(LineSeries::new(points, BAR.stroke_width(2)))?;
    root.present()?;
    Ok(())
}

/// `tail`'s chart: a panel per fan-out, in each the latency by percentile (as `run` draws it,
/// on a log scale of milliseconds) of every strategy. `latency[i]` is `report.rows[i]`'s.
pub fn write_tail_svg(
    path: &Path,
    report: &TailReport,
    latency: &[Histogram<u64>],
) -> anyhow::Result<()> {
    create_parent(path)?;
    draw_tail(path, report, latency).map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

fn draw_tail(
    path: &Path,
    report: &TailReport,
    latency: &[Histogram<u64>],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut fanouts: Vec<usize> = report.rows.iter().map(|r| r.backends).collect();
    fanouts.dedup();
    let panels = fanouts.len().max(1);
    let root = SVGBackend::new(path, (560 * panels as u32, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let root = root.titled(
        &format!(
            "tails: backends at {}, open loop at {}/s, latency by percentile",
            report.latency, report.rate
        ),
        ("sans-serif", 20),
    )?;
    let calls = latency.iter().map(|h| h.len()).max().unwrap_or(0);
    let right = (calls.max(100) as f64).log10().ceil();
    let (lo, hi) = latency
        .iter()
        .filter(|h| !h.is_empty())
        .fold((f64::MAX, 1.0f64), |(lo, hi), h| {
            (lo.min(h.min() as f64 / 1e3), hi.max(h.max() as f64 / 1e3))
        });
    let lo = if lo == f64::MAX { 0.1 } else { lo / 1.5 };
    for (area, n) in root.split_evenly((1, panels)).iter().zip(&fanouts) {
        draw_tail_panel(area, report, latency, *n, right, (lo, hi))?;
    }
    root.present()?;
    Ok(())
}

/// One panel of `tail`'s chart: the strategies at fan-out `n`, x up to `right` (see
/// [`nines`]), y over `lo..hi * 1.5` ms on a log scale.
fn draw_tail_panel(
    area: &DrawingArea<SVGBackend<'_>, Shift>,
    report: &TailReport,
    latency: &[Histogram<u64>],
    n: usize,
    right: f64,
    (lo, hi): (f64, f64),
) -> Result<(), Box<dyn std::error::Error>> {
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{n} backend(s) a call"), ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..right, (lo..hi * 1.5).log_scale())?;
    chart
        .configure_mesh()
        .x_labels(right as usize + 1)
        .x_label_formatter(&percentile_label)
        .x_desc("percentile")
        .y_desc("latency (ms, log scale)")
        .draw()?;
    let rows = report
        .rows
        .iter()
        .zip(latency)
        .filter(|(r, _)| r.backends == n);
    for (i, (row, h)) in rows.enumerate() {
        let color = SERIES[i % SERIES.len()];
        let points: Vec<(f64, f64)> = h
            .iter_quantiles(5)
            .map(|v| {
                let x = nines(v.quantile_iterated_to()).min(right);
                (x, (v.value_iterated_to() as f64 / 1e3).max(lo))
            })
            .collect();
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(format!("{} ({})", row.strategy, row.flags))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
    }
    draw_legend(&mut chart, SeriesLabelPosition::UpperLeft)
}
