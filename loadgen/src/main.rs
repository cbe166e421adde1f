//! The `loadgen` binary: parse flags, run the subcommand, print the report. Ctrl-C stops the
//! load and prints what was measured so far.
#![forbid(unsafe_code)]

use clap::Parser;
use loadgen::cli::{Cli, Command};
use loadgen::report::output_path;
use tokio::sync::watch;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread: tokio's single-threaded scheduler, with no work stealing or cross-thread
    // wake-ups to pay for.
    let runtime = match cli.command.threads() {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        threads => fanout_server::thread::runtime(threads.map_or(0, usize::from), "loadgen")?,
    };
    // Only errors by default: the local deployment's servers would otherwise interleave their
    // logs (stall warnings in the blocking configurations) with the table. RUST_LOG widens it.
    // The exporter's channel lives on the runtime, so set telemetry up inside it.
    let telemetry = {
        let _in_runtime = runtime.enter();
        fanout_telemetry::init_with(&cli.telemetry, "loadgen", "error", 0.01)
            .map_err(anyhow::Error::msg)?
    };
    // `watch` measures nothing of its own: Ctrl-C just ends it.
    let reports = !matches!(cli.command, Command::Watch(_));
    let outcome = runtime.block_on(async {
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                if reports {
                    eprintln!("\ninterrupted: stopping, then reporting what was measured");
                }
                let _ = stop_tx.send(true);
            }
        });
        match cli.command {
            Command::Run(args) => {
                let (json, chart) = (args.json.clone(), args.chart.clone());
                let report = loadgen::run(args, stop).await?;
                loadgen::report::print_run(&report);
                write_outputs(&report, json.as_deref(), chart.as_deref())?;
            }
            Command::Compare(mut args) => {
                args.json = output_path(&args.json);
                args.chart = output_path(&args.chart);
                loadgen::compare(args, stop).await?;
            }
            Command::Tail(mut args) => {
                args.json = output_path(&args.json);
                args.chart = output_path(&args.chart);
                loadgen::tail(args, stop).await?;
            }
            Command::Overload(mut args) => {
                args.json = output_path(&args.json);
                args.chart = output_path(&args.chart);
                loadgen::overload(args, stop).await?;
            }
            Command::Resilience(mut args) => {
                args.json = output_path(&args.json);
                args.chart = output_path(&args.chart);
                loadgen::resilience(args, stop).await?;
            }
            Command::Merge(args) => {
                let report = loadgen::merge(&args)?;
                loadgen::report::print_run(&report);
                write_outputs(&report, args.json.as_deref(), args.chart.as_deref())?;
            }
            Command::Watch(args) => loadgen::watch(args, stop).await?,
            Command::Health(args) => {
                let url = loadgen::target::normalize_url(&args.url);
                let tls = fanout_tls::ClientTls::load(&args.tls.files())?;
                match loadgen::deploy::health(&url, &args.service, args.timeout, &tls).await {
                    Ok(tonic_health::pb::health_check_response::ServingStatus::Serving) => {
                        println!("SERVING");
                    }
                    Ok(status) => {
                        eprintln!("{url}: {}", status.as_str_name());
                        std::process::exit(1);
                    }
                    Err(e) => {
                        eprintln!("{url}: not healthy: {e}");
                        std::process::exit(1);
                    }
                }
            }
        }
        anyhow::Ok(())
    });
    telemetry.shutdown();
    outcome
}

/// Writes a run's (or a merge's) JSON and chart where asked.
fn write_outputs(
    report: &loadgen::model::RunReport,
    json: Option<&std::path::Path>,
    chart: Option<&std::path::Path>,
) -> anyhow::Result<()> {
    if let Some(path) = json.map(output_path) {
        loadgen::report::write_json(&path, report)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = chart.map(output_path) {
        let latency = report
            .histograms
            .as_ref()
            .map(|h| loadgen::stats::decode(&h.latency))
            .transpose()
            .map_err(anyhow::Error::msg)?
            .unwrap_or_else(loadgen::stats::histogram);
        loadgen::chart::write_percentiles_svg(&path, report, &latency)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
