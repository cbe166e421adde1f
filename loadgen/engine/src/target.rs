//! The server under load: its URL, the connections to it, and the checks before a run that it
//! is the kind of server the load needs and takes the request the load will send, so a wrong
//! target stops the run at once with a reason instead of filling a report with errors.

use std::time::Duration;

use anyhow::{anyhow, bail};
use fanout_proto::paths;
use fanout_proto::v1::{ServerStats, StatsRequest};
use fanout_tls::{ClientTls, ClientTlsArgs};
use tonic::Code;

use crate::caller::Caller;
use crate::conn::Conn;
use crate::model::Rpc;

/// `host:port` becomes `http://host:port`.
pub fn normalize_url(url: &str) -> String {
    if url.contains("://") {
        url.to_owned()
    } else {
        format!("http://{url}")
    }
}

/// Opens `n` HTTP/2 connections to `url` (over TLS as `tls` says for `https://`), failing
/// within seconds with a message that says what to do when nothing answers there.
pub async fn connect(url: &str, n: u32, tls: &ClientTlsArgs) -> anyhow::Result<Vec<Conn>> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| anyhow!("`{url}` is not a URL ({e}); write it like http://127.0.0.1:50051"))?;
    let connector = match uri.scheme_str() {
        Some("https") => Some(
            ClientTls::load(&tls.files())?
                .connector()
                .map_err(|e| anyhow!(e))?,
        ),
        _ => None,
    };
    let mut conns = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let conn = Conn::open(&uri, Duration::from_secs(3), connector.as_ref())
            .await
            .map_err(|e| {
                anyhow!(
                    "cannot reach {url}: {}. Is the server running there? Without --target, \
                 loadgen starts a local deployment of its own.",
                    error_chain(e.as_ref())
                )
            })?;
        // One call on each connection at once: a server closes a connection that has sent no
        // call within its first-request timeout (fanout's: 10 s), and a run can wait longer
        // than that before its load starts (--start-at). Its answer does not matter here.
        let _ = conn
            .call::<tonic_health::pb::HealthCheckResponse>(
                "/grpc.health.v1.Health/Check",
                &tonic_health::pb::HealthCheckRequest::default(),
                Duration::from_secs(3),
            )
            .await;
        conns.push(conn);
    }
    Ok(conns)
}

/// An error and its sources in one line, each said once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        source = s.source();
    }
    text
}

/// Checks that `conn` leads to the kind of fanout server `rpc` needs.
pub async fn probe(url: &str, conn: &Conn, rpc: Rpc) -> anyhow::Result<()> {
    let (service, path) = match rpc {
        Rpc::Fetch => ("fanout.v1.Backend", paths::BACKEND_STATS),
        Rpc::Aggregate | Rpc::Stream => ("fanout.v1.Aggregator", paths::AGGREGATOR_STATS),
    };
    let answer = conn
        .call::<ServerStats>(path, &StatsRequest {}, Duration::from_secs(5))
        .await;
    match answer {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::Unimplemented => bail!(
            "{url} speaks gRPC but does not serve {service}: point --target at {}",
            match rpc {
                Rpc::Fetch => "a backend (or use --rpc aggregate for an aggregator)",
                _ => "an aggregator (or use --rpc fetch for a backend)",
            }
        ),
        Err(s) => bail!(
            "{url} is not a working {service}: {}: {}",
            fanout_proto::code_name(s.code()),
            s.message()
        ),
    }
}

/// Makes one call of the exact kind the load will make, so a request the target refuses
/// (overrides not allowed, unknown backend) stops the run with the target's own reason. A
/// refusal comes at once; a call still unanswered after a second is not one (the target is just
/// slow, which the load will measure), so the run goes on without waiting for it.
pub async fn probe_caller(caller: &Caller) -> anyhow::Result<()> {
    let Ok(answer) = tokio::time::timeout(Duration::from_secs(1), caller.once()).await else {
        return Ok(());
    };
    let status = answer.err();
    match status {
        Some(s)
            if matches!(
                s.code(),
                Code::InvalidArgument
                    | Code::PermissionDenied
                    | Code::Unimplemented
                    | Code::Unauthenticated
            ) =>
        {
            bail!(
                "the target refused the request: {}: {}",
                fanout_proto::code_name(s.code()),
                s.message()
            )
        }
        _ => Ok(()),
    }
}
