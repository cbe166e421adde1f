//! One configuration of `compare`'s matrix measured: its deployment (or the live target
//! through overrides), its load, its row.

use backend::latency::LatencySpec;
use fanout_proto::v1::{AggregateRequest, FetchRequest};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Cell, windows};
use crate::caller;
use crate::cli::CompareArgs;
use crate::deploy::{Deployment, DeploymentSpec};
use crate::model::{Load, Row, Rpc};
use crate::run::measure;
use crate::target::connect;

/// The longest deadline a request may ask for (the aggregator's limit), in milliseconds.
const LONGEST_MS: u32 = fanout_proto::limits::MAX_TIMEOUT.as_millis() as u32;

pub(super) async fn measure_row(
    args: &CompareArgs,
    target: Option<&str>,
    backends: usize,
    cell: &Cell,
    load: Load,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Row> {
    let local = &args.local;
    let Cell {
        fanout,
        mode,
        ref bound,
    } = *cell;
    let load = windows(load, bound, fanout);
    let spec = DeploymentSpec {
        backends,
        replicas: local.replicas(),
        latency: local.latency(),
        mode,
        backend_workers: local.backend_workers as usize,
        fanout: Some(fanout),
        aggregator_workers: local.aggregator_workers as usize,
        capacity: None,
        policies: None,
        fail_rate: 0.0,
        faults: Vec::new(),
    };
    let (deployment, url) = match target {
        Some(t) => (None, t.to_owned()),
        None => {
            tracing::debug!("starting {}", spec.describe());
            let d = Deployment::start(&spec).await?;
            let url = d.target();
            (Some(d), url)
        }
    };
    let delay_ms = match (local.latency(), target) {
        (LatencySpec::Fixed(d), Some(_)) => Some(d.as_millis() as u32),
        _ => None,
    };
    // Against a live aggregator: the configuration through overrides, no simulated failures,
    // and the longest deadlines the aggregator allows (its own --deadline still caps them).
    let aggregate = AggregateRequest {
        query: "loadgen".into(),
        fanout: target.map(|_| fanout.into()),
        mode: target.map(|_| mode.into()),
        delay_ms,
        fail: target.map(|_| false),
        deadline_ms: target.map(|_| LONGEST_MS),
        attempt_timeout_ms: target.map(|_| LONGEST_MS),
        no_cache: true,
        ..Default::default()
    };
    let load_warmup = load.warmup;
    let (concurrency, rate) = (load.shape.concurrency(), load.shape.rate());
    let measured = async {
        let conns = connect(&url, args.load.connections, &args.tls).await?;
        let callers = caller::callers(
            Rpc::Aggregate,
            &conns,
            &FetchRequest::default(),
            &aggregate,
            load.timeout,
        );
        let label = format!("{} / {}", fanout.cli_name(), mode.cli_name());
        anyhow::Ok(measure(label, load, callers, stop, Instant::now()).await)
    }
    .await;
    if let Some(d) = deployment {
        d.stop().await;
    }
    let outcome = measured?;
    let p = outcome.stats.percentiles();
    let calls_per_sec = outcome.calls_per_sec();
    Ok(Row {
        fanout: fanout.cli_name().into(),
        backend_mode: mode.cli_name().into(),
        concurrency: concurrency as u32,
        calls_per_sec,
        littles_law_calls_per_sec: (rate.is_none() && outcome.stats.latency.mean() > 0.0)
            .then(|| concurrency as f64 / (outcome.stats.latency.mean() / 1e6)),
        theory_calls_per_sec: bound.calls_per_sec,
        efficiency: calls_per_sec / bound.calls_per_sec,
        limit: bound.limit.name().into(),
        formula: bound.formula.clone(),
        call_ms: bound.call_ms,
        p50_ms: p.p50_ms,
        p90_ms: p.p90_ms,
        p99_ms: p.p99_ms,
        max_ms: p.max_ms,
        calls: outcome.stats.calls(),
        errors: outcome.stats.errors(),
        degraded: outcome.stats.degraded,
        duration_s: outcome.elapsed.as_secs_f64(),
        warmup_s: load_warmup.as_secs_f64(),
    })
}
