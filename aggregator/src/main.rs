//! The `aggregator` binary: parse flags, start logging and tracing, serve until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use fanout_server::{shutdown, thread::runtime};
use fanout_telemetry as telemetry;

fn main() -> anyhow::Result<()> {
    let cli = aggregator::cli::Cli::parse();
    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")).exit()
        }
    };
    let workers = cli.workers.map_or(0, usize::from);
    let runtime = runtime(workers, "aggregator-worker")?;
    // The exporter's channel lives on the runtime, so set telemetry up inside it.
    let telemetry = {
        let _in_runtime = runtime.enter();
        telemetry::init(&cli.telemetry, "aggregator").map_err(anyhow::Error::msg)?
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        aggregator::run(config, listener, shutdown::signal()).await?;
        anyhow::Ok(())
    });
    telemetry.shutdown();
    served
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
