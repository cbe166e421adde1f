//! `overload`'s chart: goodput, the admitted calls' p99 and the binding limit, a line per policy.

use std::path::Path;

use anyhow::anyhow;
use plotters::coord::{CoordTranslate, Shift};
use plotters::prelude::*;

use super::create_parent;
use super::style::{SERIES, draw_legend};
use crate::model::{OverloadReport, OverloadStep};

/// `overload`'s chart: goodput and the admitted calls' p99 against the offered load, a line
/// per policy, beside the capacity and the backends' latency; and the limit through the
/// slowdown.
pub fn write_overload_svg(path: &Path, report: &OverloadReport) -> anyhow::Result<()> {
    create_parent(path)?;
    draw_overload(path, report).map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// The offered-load axis of the first two panels: the steps evenly spaced, labelled by their
/// multiple of the capacity.
struct Multiples {
    /// The multiples, ascending, once each.
    values: Vec<f64>,
    /// The axis's ends.
    lo: f64,
    hi: f64,
}

impl Multiples {
    fn of(report: &OverloadReport) -> Self {
        let mut values: Vec<f64> = report.steps.iter().map(|s| s.multiple).collect();
        values.sort_by(f64::total_cmp);
        values.dedup();
        let (lo, hi) = (-0.3, values.len().max(1) as f64 - 0.7);
        Multiples { values, lo, hi }
    }

    /// Where multiple `m` is drawn.
    fn at(&self, m: f64) -> f64 {
        self.values.iter().position(|x| *x == m).unwrap_or(0) as f64
    }

    /// The label at x: its multiple on a step, nothing between.
    fn label(&self, x: &f64) -> String {
        let i = x.round();
        match self.values.get(i as usize) {
            Some(m) if i >= 0.0 && (x - i).abs() < 1e-6 => format!("{m}x"),
            _ => String::new(),
        }
    }
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
    let multiples = Multiples::of(report);
    draw_goodput(&panels[0], report, &policies, &multiples)?;
    draw_admitted_p99(&panels[1], report, &policies, &multiples)?;
    draw_limits(&panels[2], report)?;
    root.present()?;
    Ok(())
}

/// The first panel: goodput against the offered load, beside the capacity.
fn draw_goodput(
    area: &Area<'_>,
    report: &OverloadReport,
    policies: &[&str],
    x: &Multiples,
) -> Result<(), Box<dyn std::error::Error>> {
    let top = report
        .steps
        .iter()
        .map(|s| s.goodput_per_sec)
        .fold(report.capacity_per_sec, f64::max)
        * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption("good calls/s (every backend answered)", ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.lo..x.hi, 0.0..top)?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .disable_x_mesh()
        .x_labels(x.values.len() * 10)
        .x_label_formatter(&|v| x.label(v))
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
                steps
                    .map(|s| (x.at(s.multiple), s.goodput_per_sec))
                    .collect(),
            )
        })
        .collect();
    draw_lines(
        &mut chart,
        ("capacity", [(x.lo, capacity), (x.hi, capacity)]),
        lines,
        SeriesLabelPosition::LowerRight,
    )
}

/// The second panel: the admitted calls' p99 against the offered load, on a log scale, beside
/// twice the lowest p50.
fn draw_admitted_p99(
    area: &Area<'_>,
    report: &OverloadReport,
    policies: &[&str],
    x: &Multiples,
) -> Result<(), Box<dyn std::error::Error>> {
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
    let mut chart = ChartBuilder::on(area)
        .caption("admitted calls' p99", ("sans-serif", 17))
        .margin(14)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x.lo..x.hi, (latency_ms / 1.5..hi_y).log_scale())?;
    chart
        .configure_mesh()
        .light_line_style(TRANSPARENT)
        .disable_x_mesh()
        .x_labels(x.values.len() * 10)
        .x_label_formatter(&|v| x.label(v))
        .x_desc("offered load, x capacity")
        .y_desc("ms (log scale)")
        .draw()?;
    let lines = policies
        .iter()
        .map(|p| {
            let steps = report.steps.iter().filter(|s| s.policy == *p);
            let p99 = |s: &OverloadStep| s.admitted_p99_ms.max(latency_ms / 1.5);
            (*p, steps.map(|s| (x.at(s.multiple), p99(s))).collect())
        })
        .collect();
    draw_lines(
        &mut chart,
        (
            "2x the lowest p50",
            [(x.lo, latency_ms * 2.0), (x.hi, latency_ms * 2.0)],
        ),
        lines,
        SeriesLabelPosition::UpperLeft,
    )
}

/// The third panel: the limit through the slowdown, a line per policy, a grey line when the
/// backends slowed.
fn draw_limits(area: &Area<'_>, report: &OverloadReport) -> Result<(), Box<dyn std::error::Error>> {
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
    let mut chart = ChartBuilder::on(area)
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
    draw_legend(&mut chart, SeriesLabelPosition::UpperRight)
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
    draw_legend(chart, corner)
}
