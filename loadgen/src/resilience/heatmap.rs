//! `resilience`'s chart: the matrix as a heatmap, a row per scenario and a column per
//! configuration, in the manner of Palantir dialogue's simulation report (a success rate per
//! scenario and strategy). A cell's colour is its goodput against the best configuration of its
//! row, so where the defaults win and where they lose shows at a glance, whatever each row's
//! load; its text is the goodput's share of what could be served and good calls' p99.

use std::path::Path;

use anyhow::anyhow;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::cell::Cell;
use super::table::compact;
use crate::chart::create_parent;

const LABELS: i32 = 190;
const COLUMN: i32 = 210;
const ROW: i32 = 52;
const TOP: i32 = 90;
const LEGEND: i32 = 70;

/// Writes the heatmap of `cells` (`rows` down, `columns` across) to `path` (SVG).
pub fn write_svg(
    path: &Path,
    title: &str,
    rows: &[&str],
    columns: &[&str],
    cells: &[Cell],
) -> anyhow::Result<()> {
    create_parent(path)?;
    draw(path, title, rows, columns, cells)
        .map_err(|e| anyhow!("cannot draw {}: {e}", path.display()))
}

/// The colour of a cell whose goodput is `relative` (0 to 1) of its row's best: green at
/// the best, yellow at 80%, red at half and below. A square root stretches the top, so that
/// the 2% the rules allow already shows.
pub fn colour(relative: f64) -> HSLColor {
    let r = relative.clamp(0.0, 1.0);
    let warmth = ((1.0 - r) / 0.5).min(1.0).sqrt();
    HSLColor(120.0 / 360.0 * (1.0 - warmth), 0.6, 0.62)
}

fn draw(
    path: &Path,
    title: &str,
    rows: &[&str],
    columns: &[&str],
    cells: &[Cell],
) -> Result<(), Box<dyn std::error::Error>> {
    // Wide enough for the legend whatever the columns.
    let width = (LABELS + COLUMN * columns.len().max(1) as i32 + 20).max(920);
    let height = TOP + ROW * rows.len().max(1) as i32 + LEGEND;
    let root = SVGBackend::new(path, (width as u32, height as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let at = |h, v| Pos::new(h, v);
    let left = TextStyle::from(("sans-serif", 15).into_font()).pos(at(HPos::Left, VPos::Center));
    let centre = |size| {
        TextStyle::from(("sans-serif", size).into_font()).pos(at(HPos::Center, VPos::Center))
    };
    root.draw(&Text::new(
        title.to_owned(),
        (12, 22),
        ("sans-serif", 18).into_font(),
    ))?;
    for (j, column) in columns.iter().enumerate() {
        let x = LABELS + COLUMN * j as i32 + COLUMN / 2;
        let bold = ("sans-serif", 16).into_font().style(FontStyle::Bold);
        let style = TextStyle::from(bold).pos(at(HPos::Center, VPos::Center));
        root.draw(&Text::new(column.to_string(), (x, TOP - 20), style))?;
    }
    for (i, row) in rows.iter().enumerate() {
        let y0 = TOP + ROW * i as i32;
        root.draw(&Text::new(
            row.to_string(),
            (12, y0 + ROW / 2),
            left.clone(),
        ))?;
        let in_row: Vec<&Cell> = cells.iter().filter(|c| c.scenario == *row).collect();
        let best = in_row
            .iter()
            .map(|c| c.goodput_per_s)
            .fold(0.0f64, f64::max);
        for (j, column) in columns.iter().enumerate() {
            let x0 = LABELS + COLUMN * j as i32;
            let area = [(x0 + 2, y0 + 2), (x0 + COLUMN - 2, y0 + ROW - 2)];
            let Some(c) = in_row.iter().find(|c| c.config == *column) else {
                root.draw(&Rectangle::new(area, RGBColor(235, 235, 235).filled()))?;
                root.draw(&Text::new("-", (x0 + COLUMN / 2, y0 + ROW / 2), centre(14)))?;
                continue;
            };
            let relative = if best > 0.0 {
                c.goodput_per_s / best
            } else {
                1.0
            };
            root.draw(&Rectangle::new(area, colour(relative).filled()))?;
            let text = compact(c);
            let (share, rest) = text.split_once(' ').unwrap_or((&text, ""));
            root.draw(&Text::new(
                share.to_owned(),
                (x0 + COLUMN / 2, y0 + 18),
                centre(17),
            ))?;
            root.draw(&Text::new(
                format!("p99 {rest}"),
                (x0 + COLUMN / 2, y0 + 37),
                centre(13),
            ))?;
        }
    }
    // The defaults' column outlined: the one the rules are about.
    if let Some(j) = columns.iter().position(|c| *c == "defaults") {
        let x0 = LABELS + COLUMN * j as i32;
        let bottom = TOP + ROW * rows.len() as i32;
        let outline = [(x0, TOP), (x0 + COLUMN, bottom)];
        root.draw(&Rectangle::new(outline, BLACK.stroke_width(2)))?;
    }
    let y = TOP + ROW * rows.len() as i32 + 22;
    let legend = [
        "colour: goodput against the best configuration of the row (green: as good; yellow: 80%; red: half or less)",
        "text: good calls as a share of what could be served (offered, or the capacity when more is offered); good calls' p99",
        "E: whole calls failed or unanswered; D: calls degraded (a part of an unbroken backend missing)",
    ];
    for (k, line) in legend.iter().enumerate() {
        root.draw(&Text::new(
            line.to_string(),
            (12, y + 16 * k as i32),
            ("sans-serif", 13).into_font(),
        ))?;
    }
    root.present()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_best_is_green_and_half_is_red() {
        assert!((colour(1.0).0 - 1.0 / 3.0).abs() < 1e-9);
        assert!(colour(0.5).0.abs() < 1e-9);
        assert!(colour(0.1).0.abs() < 1e-9);
        // 2% off already leaves pure green behind.
        assert!(colour(0.98).0 < colour(1.0).0 - 0.05);
    }
}
