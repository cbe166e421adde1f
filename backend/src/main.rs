//! The `backend` binary: parse flags, start logging, serve until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use fanout_common::{shutdown, telemetry, thread::runtime};

fn main() -> anyhow::Result<()> {
    let cli = backend::cli::Cli::parse();
    telemetry::init(cli.log_format);
    let workers = cli.workers.map_or(0, usize::from);
    runtime(workers, "backend-worker")?.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        backend::run(cli.config(), listener, shutdown::signal()).await?;
        Ok(())
    })
}
