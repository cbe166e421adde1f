//! The charts, SVGs a person would rather look at than read.
//!
//! `compare`'s: one row per configuration; left, its calls/s as a bar with its theoretical
//! bound as a red tick and the efficiency beside it; right, its p50 and p99 latency. Both on log
//! scales: the configurations differ by two orders of magnitude, which is the point.
//!
//! `run`'s (and `merge`'s): the latency distribution by percentile, the way HdrHistogram plots
//! it: the x axis stretches the tail (90%, 99%, 99.9%, ... equally spaced), where load tests
//! find their trouble.

use std::path::Path;

use anyhow::{Context, anyhow};
use plotters::coord::CoordTranslate;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use hdrhistogram::Histogram;

use crate::model::{CompareReport, OverloadReport, OverloadStep, Row, RunReport, TailReport};

const BAR: RGBColor = RGBColor(66, 133, 244);
const THEORY: RGBColor = RGBColor(219, 68, 55);
const P50: RGBColor = RGBColor(15, 157, 88);
const P99: RGBColor = RGBColor(244, 160, 0);

/// Writes the chart of `report` to `path` (SVG), creating its folder.
pub fn write_svg(path: &Path, report: &CompareReport) -> anyhow::Result<()> {
    create_parent(path)?;
    draw(path, report).map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

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

/// The percentile at x (see [`nines`]): `99.9%` at 3.
fn percentile_label(x: &f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    format!("{}%", (q * 1e4).round() / 1e4)
}

/// x for quantile q: log10(1 / (1 - q)), so 90% is at 1, 99% at 2, 99.9% at 3.
fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-7).log10()
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

fn draw(path: &Path, report: &CompareReport) -> Result<(), Box<dyn std::error::Error>> {
    let rows = &report.scenarios;
    let n = rows.len().max(1);
    // `(0..m).into_segmented()` has m + 1 slots; ask for exactly n.
    let slots = || (0..n.saturating_sub(1).max(1)).into_segmented();
    // Rows top to bottom in the order measured: category i is drawn at the top for i = 0.
    let labels: Vec<String> = rows
        .iter()
        .map(|r| format!("{} / {}", r.fanout, r.backend_mode))
        .collect();
    let row_at = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => n.checked_sub(i + 1),
        SegmentValue::Last => None,
    };
    let label_of = |v: &SegmentValue<usize>| {
        row_at(v)
            .and_then(|i| labels.get(i).cloned())
            .unwrap_or_default()
    };
    let slot = |i: usize| n - 1 - i;

    let root = SVGBackend::new(path, (1400, 120 + 42 * n as u32)).into_drawing_area();
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

    // Throughput against theory, horizontal bars on a log scale.
    let top = rows
        .iter()
        .flat_map(|r| [r.calls_per_sec, r.theory_calls_per_sec])
        .fold(10.0f64, f64::max)
        * 2.0;
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "calls/s: measured (bars) against theory (red)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(190)
        .build_cartesian_2d((1.0f64..top).log_scale(), slots())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(n)
        .y_label_style(("sans-serif", 15))
        .y_label_formatter(&label_of)
        .x_desc("calls per second (log scale)")
        .draw()?;
    chart
        .draw_series(rows.iter().enumerate().map(|(i, r)| {
            let mut bar = Rectangle::new(
                [
                    (1.0, SegmentValue::Exact(slot(i))),
                    (r.calls_per_sec.max(1.0), SegmentValue::Exact(slot(i) + 1)),
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
                    (r.theory_calls_per_sec, SegmentValue::Exact(slot(i))),
                    (r.theory_calls_per_sec, SegmentValue::Exact(slot(i) + 1)),
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
                SegmentValue::CenterOf(slot(i)),
            ),
            ("sans-serif", 13).into_font(),
        )
    }))?;
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;

    // Latency percentiles, same rows.
    let (lo, hi) = rows
        .iter()
        .flat_map(|r| [r.p50_ms, r.p99_ms])
        .filter(|v| *v > 0.0)
        .fold((f64::MAX, 1.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let lo = if lo == f64::MAX { 0.1 } else { lo / 2.0 };
    let mut chart = ChartBuilder::on(&right)
        .caption("latency: p50 and p99", ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(10)
        .build_cartesian_2d((lo..hi * 2.0).log_scale(), slots())?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(TRANSPARENT)
        .y_labels(n)
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
                            (pick(r), SegmentValue::CenterOf(slot(i))),
                            6,
                            color.filled(),
                        )
                    }),
            )?
            .label(name)
            .legend(move |(x, y)| Circle::new((x + 6, y), 5, color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// One colour per strategy (or policy), in the order they are listed.
const SERIES: [RGBColor; 6] = [
    THEORY,
    BAR,
    P50,
    P99,
    RGBColor(171, 71, 188),
    RGBColor(0, 0, 0),
];

/// Creates the folder `path` goes in, if it has one.
pub(crate) fn create_parent(path: &Path) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
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
            .filter(|(r, _)| r.backends == *n);
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
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()?;
    }
    root.present()?;
    Ok(())
}

/// `overload`'s chart: goodput and the admitted calls' p99 against the offered load, a line
/// per policy, beside the capacity and the backends' latency; and the limit through the
/// slowdown.
pub fn write_overload_svg(path: &Path, report: &OverloadReport) -> anyhow::Result<()> {
    create_parent(path)?;
    draw_overload(path, report).map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

fn draw_overload(path: &Path, report: &OverloadReport) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1650, 520)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut policies: Vec<&str> = report.steps.iter().map(|s| s.policy.as_str()).collect();
    policies.dedup();
    let root = root.titled(
        &format!(
            "overload: {} backends at {}, capacity {:.0} calls/s; limits: {}",
            report.backends,
            report.latency,
            report.capacity_per_sec,
            policies.join(" beside ")
        ),
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((1, 3));
    // The steps evenly spaced, labelled by their multiple of the capacity.
    let mut multiples: Vec<f64> = report.steps.iter().map(|s| s.multiple).collect();
    multiples.sort_by(f64::total_cmp);
    multiples.dedup();
    let at = |m: f64| multiples.iter().position(|x| *x == m).unwrap_or(0) as f64;
    let (lo_x, hi_x) = (-0.3, multiples.len().max(1) as f64 - 0.7);
    let label = |x: &f64| {
        let i = x.round();
        match multiples.get(i as usize) {
            Some(m) if i >= 0.0 && (x - i).abs() < 1e-6 => format!("{m}x"),
            _ => String::new(),
        }
    };

    // Goodput.
    let top = report
        .steps
        .iter()
        .map(|s| s.goodput_per_sec)
        .fold(report.capacity_per_sec, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&panels[0])
        .caption("good calls/s (every backend answered)", ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(lo_x..hi_x, 0.0..top)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .disable_x_mesh()
        .x_labels(multiples.len() * 10)
        .x_label_formatter(&label)
        .x_desc("offered load, x capacity")
        .y_desc("calls/s")
        .draw()?;
    let capacity = report.capacity_per_sec;
    let lines = policies
        .iter()
        .map(|p| {
            let steps = report.steps.iter().filter(|s| s.policy == *p);
            (
                *p,
                steps.map(|s| (at(s.multiple), s.goodput_per_sec)).collect(),
            )
        })
        .collect();
    draw_lines(
        &mut chart,
        ("capacity", [(lo_x, capacity), (hi_x, capacity)]),
        lines,
        SeriesLabelPosition::LowerRight,
    )?;

    // Admitted p99.
    let latency_ms = report
        .steps
        .iter()
        .map(|s| s.admitted_p50_ms)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min);
    let latency_ms = if latency_ms == f64::MAX {
        1.0
    } else {
        latency_ms
    };
    let hi_y = report
        .steps
        .iter()
        .map(|s| s.admitted_p99_ms)
        .fold(latency_ms * 2.0, f64::max)
        * 1.5;
    let mut chart = ChartBuilder::on(&panels[1])
        .caption("admitted calls' p99", ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(lo_x..hi_x, (latency_ms / 1.5..hi_y).log_scale())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .disable_x_mesh()
        .x_labels(multiples.len() * 10)
        .x_label_formatter(&label)
        .x_desc("offered load, x capacity")
        .y_desc("ms (log scale)")
        .draw()?;
    let lines = policies
        .iter()
        .map(|p| {
            let steps = report.steps.iter().filter(|s| s.policy == *p);
            let p99 = |s: &OverloadStep| s.admitted_p99_ms.max(latency_ms / 1.5);
            (*p, steps.map(|s| (at(s.multiple), p99(s))).collect())
        })
        .collect();
    draw_lines(
        &mut chart,
        (
            "2x the lowest p50",
            [(lo_x, latency_ms * 2.0), (hi_x, latency_ms * 2.0)],
        ),
        lines,
        SeriesLabelPosition::UpperLeft,
    )?;

    // The limit through the slowdown.
    let end = report
        .slowdowns
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.t_s))
        .fold(1.0f64, f64::max);
    // An open adaptive limit (its ceiling) is drawn along the top rather than stretching the
    // axis to it.
    let open = aggregator::client::limit::control::OPEN as f64;
    let top = report
        .slowdowns
        .iter()
        .flat_map(|s| s.samples.iter().map(|x| x.limit))
        .filter(|&l| l < open)
        .fold(1.0f64, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(&panels[2])
        .caption(
            "binding limit (open: along the top); backends 2x slower halfway",
            ("sans-serif", 17),
        )
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..end, 0.0..top)?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("calls in flight allowed")
        .draw()?;
    for (i, s) in report.slowdowns.iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        chart
            .draw_series(LineSeries::new(
                s.samples.iter().map(|x| (x.t_s, x.limit.min(top))),
                color.stroke_width(2),
            ))?
            .label(s.policy.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
        chart.draw_series(std::iter::once(PathElement::new(
            vec![(s.slowed_at_s, 0.0), (s.slowed_at_s, top)],
            BLACK.mix(0.4),
        )))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

/// A grey reference line, a coloured line per policy (in order), and their legend at `corner`.
fn draw_lines<'a, CT: CoordTranslate<From = (f64, f64)>>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    reference: (&str, [(f64, f64); 2]),
    lines: Vec<(&str, Vec<(f64, f64)>)>,
    corner: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>> {
    let grey = BLACK.mix(0.5);
    chart
        .draw_series(LineSeries::new(reference.1, grey.stroke_width(1)))?
        .label(reference.0)
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 14, y)], grey));
    for (i, (name, points)) in lines.into_iter().enumerate() {
        let color = SERIES[i % SERIES.len()];
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(corner)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
