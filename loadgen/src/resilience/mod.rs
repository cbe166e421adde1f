//! `loadgen resilience`: every mechanism against every fault, in one table.
//!
//! A row per scenario ([`conditions`]: healthy load, a cold start, a heavy tail, a slow or
//! killed replica, a silent or refusing backend, a slowdown, failures, overload), a column per
//! configuration of the aggregator ([`configurations`]: its defaults beside the alternatives),
//! each cell measured on a fresh local deployment under an open loop ([`measure`]) and kept as
//! a [`cell::Cell`]. Then the matrix ([`table`]), the rules the defaults must keep ([`rules`]),
//! the JSON and a heatmap ([`heatmap`]). The executable spec of the call path, as Palantir
//! dialogue's simulation report is of its client: a change that makes any cell worse shows.

pub mod cell;
pub mod conditions;
pub mod configurations;
pub mod heatmap;
pub mod measure;
pub mod rules;
pub mod table;

use std::time::Instant;

use anyhow::bail;
use fanout_proto::cli::fmt_duration;
use tokio::sync::watch;

use crate::cli::ResilienceArgs;
use crate::report::write_json;
use cell::Report;
use conditions::Plan;

/// Measures every cell asked for; prints the cells, the matrix and the rules; writes the JSON
/// and the heatmap.
pub async fn resilience(
    args: ResilienceArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Report> {
    if args.scenarios.is_empty() || args.configs.is_empty() {
        bail!("--scenarios and --configs each need at least one value");
    }
    let started = Instant::now();
    let scenarios = once_each(&args.scenarios);
    let configs = once_each(&args.configs);
    let rows: Vec<&str> = scenarios.iter().map(|c| conditions::name(*c)).collect();
    let columns: Vec<&str> = configs.iter().map(|c| configurations::name(*c)).collect();
    eprintln!(
        "resilience: {} scenarios x {} configurations, {} per cell after {} of warm-up, each on \
         a fresh local deployment: 3 backends at {} working on {} calls at once each",
        rows.len(),
        columns.len(),
        fmt_duration(args.duration),
        fmt_duration(args.warmup),
        args.latency,
        args.capacity,
    );
    for c in &configs {
        eprintln!(
            "  {}: {}",
            configurations::name(*c),
            configurations::flags(*c)
        );
    }
    let mut cells = Vec::new();
    'all: for &condition in &scenarios {
        let plan = Plan::of(condition, &args);
        eprintln!("{}", plan.describe());
        for &configuration in &configs {
            if *stop.borrow() {
                break 'all;
            }
            let cell = measure::cell(&plan, configuration, stop.clone()).await?;
            // After the progress lines on stderr: the header again, for a table that reads.
            if cells.is_empty() {
                println!("{}", table::CELL_HEADER);
            }
            table::print_cell(&cell);
            cells.push(cell);
        }
    }
    table::print_matrix(&rows, &columns, &cells);
    let verdicts = rules::check(&cells, &rules::Bounds::issue());
    table::print_verdicts(
        "the rules the defaults must keep (at the issue's bounds):",
        &verdicts,
    );
    let wall = started.elapsed();
    let report = Report {
        latency: args.latency.to_string(),
        backend_capacity: args.capacity,
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        wall_s: wall.as_secs_f64(),
        interrupted: *stop.borrow(),
        cells,
        rules: verdicts,
    };
    write_json(&args.json, &report)?;
    let title = format!(
        "resilience: goodput per scenario and configuration ({} per cell, backends at {})",
        fmt_duration(args.duration),
        args.latency
    );
    heatmap::write_svg(&args.chart, &title, &rows, &columns, &report.cells)?;
    println!(
        "\nmeasured in {}; wrote {} and {}",
        fmt_duration(wall),
        args.json.display(),
        args.chart.display()
    );
    Ok(report)
}

/// `items` in their order, each once.
fn once_each<T: PartialEq + Copy>(items: &[T]) -> Vec<T> {
    let mut once = Vec::new();
    for &item in items {
        if !once.contains(&item) {
            once.push(item);
        }
    }
    once
}
