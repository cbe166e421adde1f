//! `loadgen compare`: the same load against every configuration in turn, each beside its
//! theoretical bound, as a table, JSON and a chart.
//!
//! The parts: this file runs the matrix, `cell` measures one configuration, `windows` decides
//! how long each is measured and which share the machine.

use std::time::Duration;

use anyhow::bail;
use fanout_proto::paths;
use fanout_proto::v1::{AggregateReply, AggregateRequest, Fanout, Mode};
use fanout_tls::ClientTlsArgs;
use tokio::sync::watch;

use crate::cli::CompareArgs;
use crate::model::{CompareReport, Row, Rpc};
use crate::report::{COMPARE_HEADER, print_row, write_json};
use crate::target::{connect, normalize_url, probe};
use crate::theory::{self, Setup, cores};

mod cell;
mod windows;

use cell::measure_row;
pub use windows::{shares_the_machine, windows};

/// Runs the matrix.
pub async fn compare(
    args: CompareArgs,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<CompareReport> {
    if args.modes.is_empty() || args.fanouts.is_empty() {
        bail!("--modes and --fanouts each need at least one value");
    }
    let local = &args.local;
    let target = args.target.as_deref().map(normalize_url);
    let load = args
        .load
        .load(args.duration, args.warmup)
        .map_err(anyhow::Error::msg)?;
    let mut backends = local.local_backends();
    if let Some(url) = &target {
        local.check_for_target().map_err(anyhow::Error::msg)?;
        backends = check_target(url, &args.tls).await?;
    }
    let latency = local.latency();
    let concurrency = load.shape.concurrency();
    eprintln!(
        "comparing {} configurations: {}, {} backends at {}, at least {} per configuration{}",
        args.modes.len() * args.fanouts.len(),
        match load.shape.rate() {
            Some(r) => format!("{r} calls/s, at most {concurrency} outstanding"),
            None => format!("{concurrency} callers"),
        },
        backends,
        latency,
        humantime::format_duration(args.duration + args.warmup),
        match &target {
            Some(t) => format!(", against {t} through overrides"),
            None => ", each on a fresh local deployment".into(),
        }
    );

    // The matrix in order. On a local deployment, the configurations whose bound is threads
    // that sleep (blocked workers) hardly use the CPU: they are measured side by side, each on
    // its own deployment, before the others, which are measured one at a time because they
    // compete for the cores (see `shares_the_machine`). Rows print in matrix order.
    let cells: Vec<Cell> = args
        .fanouts
        .iter()
        .flat_map(|&f| args.modes.iter().map(move |&m| (f.into(), m.into())))
        .map(|(fanout, mode)| Cell {
            fanout,
            mode,
            bound: theory::bound(&Setup {
                concurrency,
                rate: load.shape.rate(),
                fanout: Some(fanout),
                mode,
                backends,
                replicas: if target.is_some() {
                    1
                } else {
                    local.replicas()
                },
                latency: latency.clone(),
                backend_workers: local.backend_workers as usize,
                aggregator_workers: local.aggregator_workers as usize,
                cores: cores(),
            }),
        })
        .collect();
    let (together, alone): (Vec<usize>, Vec<usize>) =
        (0..cells.len()).partition(|&i| target.is_none() && shares_the_machine(&cells[i].bound));
    if !together.is_empty() {
        eprintln!(
            "configurations bounded by blocked workers ({} of them) hardly use the CPU: they are \
             measured first, side by side; the rest one at a time",
            together.len()
        );
    }
    println!("{COMPARE_HEADER}");
    let mut measured: Vec<Option<Row>> = vec![None; cells.len()];
    let mut printed = 0;
    let mut print_ready = |measured: &[Option<Row>]| {
        while let Some(Some(row)) = measured.get(printed) {
            print_row(row);
            printed += 1;
        }
    };
    let measure_cell = |i: usize| {
        measure_row(
            &args,
            target.as_deref(),
            backends,
            &cells[i],
            load.clone(),
            stop.clone(),
        )
    };
    if !together.is_empty() {
        let rows = futures::future::join_all(together.iter().map(|&i| measure_cell(i))).await;
        for (&i, row) in together.iter().zip(rows) {
            measured[i] = Some(row?);
        }
        print_ready(&measured);
    }
    for i in alone {
        if *stop.borrow() {
            break;
        }
        measured[i] = Some(measure_cell(i).await?);
        print_ready(&measured);
    }
    // Interrupted: what was measured, still in matrix order.
    for row in measured.iter().skip(printed).flatten() {
        print_row(row);
    }
    let rows: Vec<Row> = measured.into_iter().flatten().collect();
    let report = CompareReport {
        target: target.unwrap_or_else(|| "local".into()),
        latency: latency.to_string(),
        backends,
        backend_workers: local.backend_workers,
        aggregator_workers: local.aggregator_workers,
        cores: cores(),
        concurrency: concurrency as u32,
        rate: load.shape.rate(),
        duration_s: args.duration.as_secs_f64(),
        warmup_s: args.warmup.as_secs_f64(),
        interrupted: *stop.borrow(),
        scenarios: rows,
    };
    write_json(&args.json, &report)?;
    crate::chart::write_svg(&args.chart, &report)?;
    println!(
        "\nwrote {} and {}",
        args.json.display(),
        args.chart.display()
    );
    Ok(report)
}

/// One configuration of the matrix and its bound.
struct Cell {
    fanout: Fanout,
    mode: Mode,
    bound: theory::Bound,
}

/// Checks a live target for `compare`; returns how many backends a call fans out to.
async fn check_target(url: &str, tls: &ClientTlsArgs) -> anyhow::Result<usize> {
    let conn = connect(url, 1, tls).await?.remove(0);
    probe(url, &conn, Rpc::Aggregate).await?;
    let req = AggregateRequest {
        query: "loadgen-probe".into(),
        fanout: Some(Fanout::Concurrent.into()),
        mode: Some(Mode::Async.into()),
        delay_ms: Some(1),
        no_cache: true,
        ..Default::default()
    };
    let reply = conn
        .call::<AggregateReply>(paths::AGGREGATE, &req, Duration::from_secs(10))
        .await
        .map_err(|s| {
            anyhow::anyhow!(
                "{url} refused a call with overrides ({}: {}); compare drives a live deployment \
             through overrides, so start the aggregator and its backends with --allow-overrides",
                fanout_proto::code_name(s.code()),
                s.message()
            )
        })?;
    let refused = reply.results.iter().find(|r| {
        matches!(&r.outcome, Some(fanout_proto::v1::backend_result::Outcome::Failure(f)) if f.code_name == "PERMISSION_DENIED")
    });
    if let Some(r) = refused {
        bail!(
            "backend {} behind {url} does not allow overrides: start it with --allow-overrides",
            r.backend
        );
    }
    Ok(reply.results.len().max(1))
}
