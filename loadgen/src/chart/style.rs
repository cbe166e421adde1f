//! What the charts share: their colours, the percentile axis, the legend's box.

use plotters::coord::CoordTranslate;
use plotters::prelude::*;

pub(super) const BAR: RGBColor = RGBColor(66, 133, 244);
pub(super) const THEORY: RGBColor = RGBColor(219, 68, 55);
pub(super) const P50: RGBColor = RGBColor(15, 157, 88);
pub(super) const P99: RGBColor = RGBColor(244, 160, 0);

/// One colour per strategy (or policy), in the order they are listed.
pub(super) const SERIES: [RGBColor; 6] = [
    THEORY,
    BAR,
    P50,
    P99,
    RGBColor(171, 71, 188),
    RGBColor(0, 0, 0),
];

/// The percentile at x (see [`nines`]): `99.9%` at 3.
pub(super) fn percentile_label(x: &f64) -> String {
    let q = 100.0 * (1.0 - 10f64.powf(-x));
    format!("{}%", (q * 1e4).round() / 1e4)
}

/// x for quantile q: log10(1 / (1 - q)), so 90% is at 1, 99% at 2, 99.9% at 3.
pub(super) fn nines(q: f64) -> f64 {
    -(1.0 - q).max(1e-7).log10()
}

/// Draws the legend of the series labelled so far at `corner`, on a white box with a border.
pub(super) fn draw_legend<'a, CT: CoordTranslate>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, CT>,
    corner: SeriesLabelPosition,
) -> Result<(), Box<dyn std::error::Error>> {
    chart
        .configure_series_labels()
        .position(corner)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}
