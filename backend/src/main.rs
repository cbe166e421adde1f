//! The `backend` binary: parse flags, start logging and tracing, serve until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use fanout_server::{shutdown, thread::runtime};
use fanout_telemetry as telemetry;

fn main() -> anyhow::Result<()> {
    let cli = backend::cli::Cli::parse();
    let workers = cli.workers.map_or(0, usize::from);
    let runtime = runtime(workers, "backend-worker")?;
    // The exporter's channel lives on the runtime, so set telemetry up inside it.
    let telemetry = {
        let _in_runtime = runtime.enter();
        telemetry::init(&cli.telemetry, &format!("backend-{}", cli.name))
            .map_err(anyhow::Error::msg)?
    };
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        backend::run(cli.config(), listener, shutdown::signal()).await?;
        anyhow::Ok(())
    });
    telemetry.shutdown();
    served
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
