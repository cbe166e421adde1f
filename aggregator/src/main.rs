//! The `aggregator` binary: parse flags, start logging, serve until SIGINT/SIGTERM.
#![forbid(unsafe_code)]

use anyhow::Context;
use clap::Parser;
use fanout_common::{shutdown, telemetry, thread::runtime};

fn main() -> anyhow::Result<()> {
    let cli = aggregator::cli::Cli::parse();
    let config = match cli.config() {
        Ok(c) => c,
        Err(e) => {
            clap::Error::raw(clap::error::ErrorKind::ValueValidation, format!("{e}\n")).exit()
        }
    };
    telemetry::init(cli.log_format);
    let workers = cli.workers.map_or(0, usize::from);
    runtime(workers, "aggregator-worker")?.block_on(async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cli.listen))?;
        aggregator::run(config, listener, shutdown::signal()).await?;
        Ok(())
    })
}
