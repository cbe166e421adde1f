//! `otlp-sink`: a minimal OTLP/gRPC trace receiver that prints one JSON line per span on stdout.
//! Stands in for Jaeger where its image cannot be pulled (the compose end-to-end test).
#![forbid(unsafe_code)]

use std::io::Write;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let listen = match (args.next().as_deref(), args.next()) {
        (Some("--listen"), Some(addr)) => addr,
        (None, _) => "127.0.0.1:4317".to_owned(),
        _ => anyhow::bail!("usage: otlp-sink [--listen ADDR]   (default 127.0.0.1:4317)"),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&listen).await?;
        eprintln!(
            "otlp-sink: receiving OTLP traces on {}",
            listener.local_addr()?
        );
        let (receiver, _) = fanout_tests::otlp::Receiver::new(|span| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", span.to_json());
            let _ = out.flush();
        });
        receiver
            .serve(listener, async {
                fanout_server::shutdown::signal().await;
            })
            .await?;
        anyhow::Ok(())
    })
}
