//! `loadgen compare`: the same load against every configuration in turn, each beside its
//! theoretical bound, as a table, JSON and a chart.

use std::time::Duration;

use anyhow::bail;
use backend::latency::LatencySpec;
use fanout_proto::paths;
use fanout_proto::v1::{AggregateReply, AggregateRequest, Fanout, FetchRequest, Mode};
use fanout_tls::ClientTlsArgs;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::caller;
use crate::cli::CompareArgs;
use crate::deploy::{Deployment, DeploymentSpec};
use crate::model::{CompareReport, Load, Row, Rpc, Shape};
use crate::report::{COMPARE_HEADER, print_row, write_json};
use crate::run::measure;
use crate::target::{connect, normalize_url, probe};
use crate::theory::{self, Limit, Setup, cores};

/// The longest deadline a request may ask for (the aggregator's limit), in milliseconds.
const LONGEST_MS: u32 = fanout_proto::limits::MAX_TIMEOUT.as_millis() as u32;

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

async fn measure_row(
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

/// Whether a configuration's bound is threads that sleep (workers blocked in `thread::sleep`
/// or in a blocking receive): such a configuration uses next to no CPU, so several can be
/// measured at once on one machine without changing each other's figures.
pub fn shares_the_machine(bound: &theory::Bound) -> bool {
    matches!(
        bound.limit,
        Limit::BackendWorkers | Limit::AggregatorWorkers
    )
}

/// Stretches a closed loop's warm-up and window for slow configurations. With C callers and a
/// bound of X calls/s, one call takes about C/X once queues have formed (Little's law). The
/// warm-up must cover one such round for the queues to form, and the window several rounds:
/// completions in these configurations come in bursts of up to C calls, so over a window of one
/// round the count can be off by half.
///
/// Blocked-worker configurations (measured side by side, so time is cheap for them) get three
/// rounds of warm-up and ten of window. A blocked runtime also holds finished answers back at
/// times, so their rate wanders more. And a concurrent fan-out over blocked backends starts
/// with every call queued at all of them at once: after a single round of warm-up, the window
/// would still count calls mostly answered before it began, and read above the bound.
///
/// CPU-bound configurations are steady from the first call (the cores are saturated at once):
/// one round of warm-up and five of window, capped at 2 s and 8 s. Not behind a blocking
/// fan-out: its aggregator workers are as much the limit there (the two bounds are equal by
/// default) and its completions come in bursts, so it keeps the longer windows.
///
/// Capped, so a pathological configuration cannot stall the matrix. BENCHMARKS.md has the
/// runs behind these choices.
pub fn windows(mut load: Load, bound: &theory::Bound, fanout: Fanout) -> Load {
    let Shape::Closed { callers } = load.shape else {
        return load;
    };
    if load.requests.is_some() {
        return load;
    }
    let round = Duration::from_secs_f64(callers as f64 / bound.calls_per_sec.max(0.1));
    let (warmup, warmup_cap, rounds, cap) = match bound.limit {
        _ if shares_the_machine(bound) => (3, 10, 10, 20),
        Limit::Cores if fanout != Fanout::Blocking => (1, 2, 5, 8),
        _ => (1, 5, 5, 12),
    };
    let stretch = |rounds: u32, cap: u64| (round * rounds).min(Duration::from_secs(cap));
    load.warmup = load.warmup.max(stretch(warmup, warmup_cap));
    load.duration = load.duration.map(|d| d.max(stretch(rounds, cap)));
    load
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(calls_per_sec: f64, limit: Limit) -> theory::Bound {
        theory::Bound {
            calls_per_sec,
            limit,
            formula: String::new(),
            call_ms: 50.0,
        }
    }

    fn closed_loop() -> Load {
        Load {
            shape: Shape::Closed { callers: 64 },
            duration: Some(Duration::from_secs(3)),
            requests: None,
            warmup: Duration::from_secs(1),
            timeout: None,
        }
    }

    #[test]
    fn windows_stretch_by_rounds_and_stop_at_their_caps() {
        let secs = |l: &Load| (l.warmup.as_secs_f64(), l.duration.unwrap().as_secs_f64());
        // Fast: the asked-for windows stand.
        assert_eq!(
            secs(&windows(
                closed_loop(),
                &bound(1280.0, Limit::Callers),
                Fanout::Concurrent
            )),
            (1.0, 3.0)
        );
        // CPU-bound at 13.3/s, a round of 4.8 s: one round of warm-up, five measured, capped.
        let cpu = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::Cores),
            Fanout::Concurrent,
        );
        assert_eq!(secs(&cpu), (2.0, 8.0));
        // ...but not behind a blocking fan-out.
        let cpu_blocking = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::Cores),
            Fanout::Blocking,
        );
        assert_eq!(secs(&cpu_blocking).1, 12.0);
        // Anything else as slow: one round of warm-up and five measured, capped further.
        let pool = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::BlockingPool),
            Fanout::Concurrent,
        );
        assert!((secs(&pool).0 - 4.8).abs() < 1e-6, "{pool:?}");
        assert_eq!(secs(&pool).1, 12.0);
        // Blocked workers at 40/s, a round of 1.6 s: three rounds of warm-up, ten measured.
        let blocked = windows(
            closed_loop(),
            &bound(40.0, Limit::BackendWorkers),
            Fanout::Concurrent,
        );
        assert!((secs(&blocked).0 - 4.8).abs() < 1e-6, "{blocked:?}");
        assert!((secs(&blocked).1 - 16.0).abs() < 1e-6, "{blocked:?}");
        // ...and at 13.3/s both hit their caps.
        let slow = windows(
            closed_loop(),
            &bound(64.0 / 4.8, Limit::AggregatorWorkers),
            Fanout::Concurrent,
        );
        assert_eq!(secs(&slow), (10.0, 20.0));
        // An open loop, or a call count, is left as asked.
        let rated = Load {
            shape: Shape::Open {
                rate: 100.0,
                max_outstanding: 64,
                drain: Duration::from_secs(1),
            },
            ..closed_loop()
        };
        assert_eq!(
            secs(&windows(
                rated,
                &bound(40.0, Limit::BackendWorkers),
                Fanout::Concurrent
            )),
            (1.0, 3.0)
        );
    }

    #[test]
    fn only_blocked_worker_configurations_share_the_machine() {
        // As the theory names its limits for the default matrix.
        let of = |fanout, mode| {
            theory::bound(&Setup {
                concurrency: 64,
                rate: None,
                fanout: Some(fanout),
                mode,
                backends: 3,
                replicas: 1,
                latency: LatencySpec::Fixed(Duration::from_millis(50)),
                backend_workers: 2,
                aggregator_workers: 2,
                cores: 2,
            })
        };
        for fanout in [Fanout::Concurrent, Fanout::Sequential, Fanout::Blocking] {
            for mode in [Mode::Async, Mode::Blocking, Mode::SpawnBlocking, Mode::Cpu] {
                let b = of(fanout, mode);
                let sleeps =
                    mode == Mode::Blocking || (fanout == Fanout::Blocking && mode != Mode::Cpu);
                assert_eq!(shares_the_machine(&b), sleeps, "{fanout:?} {mode:?}: {b:?}");
            }
        }
    }
}
