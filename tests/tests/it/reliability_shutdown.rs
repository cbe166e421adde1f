//! SIGTERM under load, to an aggregator process and to a backend process: health goes
//! NOT_SERVING first (seen on a `grpc.health.v1.Health/Watch` stream), the server keeps serving
//! for its drain delay (new connections included), every call made before the listener closed
//! completes OK (those still running then are drained), later calls are refused quickly
//! (UNAVAILABLE), and the process exits 0 within its grace period.

use std::future::Future;
use std::time::{Duration, Instant};

use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_proto::v1::backend_client::BackendClient;
use fanout_proto::v1::{AggregateRequest, FetchRequest};
use fanout_tests::load::{Load, aggregator_process, backend_process, ms};
use fanout_tests::process::Process;
use fanout_tests::*;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

const DRAIN_DELAY: Duration = Duration::from_millis(500);
const GRACE: Duration = Duration::from_secs(5);
const SERVER_FLAGS: [&str; 4] = ["--drain-delay", "500ms", "--grace-period", "5s"];
/// Calls starting this close to the end of the drain delay may reach the server after its
/// listener closed (and be refused); calls starting earlier must be served.
const RACE: Duration = Duration::from_millis(250);

async fn channel(url: &str) -> Channel {
    Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .expect("connect")
}

/// A health Watch stream on a connection of its own, as a load balancer keeps; checks it starts
/// with SERVING.
async fn watch_health(url: &str) -> tonic::Streaming<HealthCheckResponse> {
    let mut health = HealthClient::new(channel(url).await);
    let mut watch = health
        .watch(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);
    watch
}

/// Runs `callers` loops of `call` against `server`, sends it SIGTERM once they are all busy,
/// keeps calling until past the drain delay, and checks what the brief promises. `call` gets a
/// channel and makes one call, returning its status.
async fn sigterm_under_load<F, Fut>(server: Process, callers: usize, call: F)
where
    F: Fn(Channel, usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), tonic::Status>> + Send,
{
    let mut watch = watch_health(&server.url()).await;
    let calls_channel = channel(&server.url()).await;
    let load = Load::start(callers, Duration::from_secs(20), {
        let call = call.clone();
        move |caller, i| {
            let call = call(calls_channel.clone(), caller, i);
            async move {
                if i == 0 {
                    // Spread the callers out, so that calls end at all moments of the drain.
                    let step = Duration::from_millis(300) / callers as u32;
                    tokio::time::sleep(step * caller as u32).await;
                }
                call.await
            }
        }
    });
    // Let the load reach a steady state: every caller has a call in flight.
    tokio::time::sleep(Duration::from_millis(700)).await;

    let term_at = Instant::now();
    server.signal("TERM");
    let not_serving = tokio::time::timeout(GRACE, watch.message())
        .await
        .expect("health said nothing after SIGTERM")
        .expect("health watch failed")
        .expect("health watch ended without saying NOT_SERVING");
    let not_serving_after = term_at.elapsed();
    assert_eq!(not_serving.status(), ServingStatus::NotServing);
    // Having learnt that the server is going away, the watcher leaves. (Kept open, the stream
    // would hold the process up for its whole grace period: see
    // `an_open_health_watch_does_not_hold_up_shutdown` below.)
    drop(watch);

    // Still serving during the drain delay, to new connections too.
    let probe_url = server.url();
    let probe = async move {
        match Endpoint::from_shared(probe_url).unwrap().connect().await {
            Ok(fresh) => call(fresh, 99, 0).await,
            Err(e) => Err(tonic::Status::unavailable(format!(
                "a new connection was refused: {e}"
            ))),
        }
    };

    let mut server = server;
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit(DRAIN_DELAY + GRACE + Duration::from_secs(3));
        (status, term_at.elapsed(), server)
    });
    let probe = probe.await;
    // Keep calling a while past the drain delay, as a client that ignores health would.
    tokio::time::sleep(
        (DRAIN_DELAY + Duration::from_millis(300)).saturating_sub(term_at.elapsed()),
    )
    .await;
    let samples = load.finish().await;
    let (status, exit_after, server) = exit.await.unwrap();

    let closing = term_at + DRAIN_DELAY;
    let in_flight_at_term = samples
        .iter()
        .filter(|s| s.start < term_at && s.end() > term_at)
        .count();
    let drained: Vec<_> = samples
        .iter()
        .filter(|s| s.start < closing && s.end() > closing && s.value.is_ok())
        .collect();
    let last_drained = drained
        .iter()
        .map(|s| s.end() - closing)
        .max()
        .unwrap_or_default();
    let failed: Vec<_> = samples
        .iter()
        .filter(|s| s.start < closing - RACE && s.value.is_err())
        .map(|s| {
            (
                ms(s.start.saturating_duration_since(term_at)),
                s.value.clone(),
            )
        })
        .collect();
    let refused: Vec<_> = samples
        .iter()
        .filter(|s| s.start >= closing - RACE && s.value.is_err())
        .collect();
    println!(
        "NOT_SERVING {:.1} ms after SIGTERM; probe during the drain delay: {:?}; {} calls, {} \
         in flight at SIGTERM, {} still running when the listener closed (the last ended {:.0} ms \
         later), {} failed; {} made \
         after it closed were refused (slowest refusal {:.1} ms: {:?}); exit {:?} {:.0} ms after \
         SIGTERM",
        ms(not_serving_after),
        probe.as_ref().map_err(tonic::Status::code),
        samples.len(),
        in_flight_at_term,
        drained.len(),
        ms(last_drained),
        failed.len(),
        refused.len(),
        refused.iter().map(|s| ms(s.took)).fold(0.0, f64::max),
        refused
            .iter()
            .max_by_key(|s| s.took)
            .map(|s| s.value.as_ref().unwrap_err().code()),
        status,
        ms(exit_after),
    );
    let logs = server.log_lines("");
    assert!(
        not_serving_after < DRAIN_DELAY,
        "NOT_SERVING came {:.0} ms after SIGTERM: after the drain delay",
        ms(not_serving_after)
    );
    probe.expect("a call during the drain delay is served");
    assert!(
        in_flight_at_term >= callers / 2,
        "too few calls in flight at SIGTERM"
    );
    assert!(failed.is_empty(), "calls failed: {failed:?}");
    for s in &refused {
        let err = s.value.as_ref().unwrap_err();
        // Refused: UNAVAILABLE (GOAWAY, or connection refused), or CANCELLED when the client
        // had queued the call on the connection the server closed.
        assert!(
            matches!(err.code(), Code::Unavailable | Code::Cancelled),
            "{err:?}"
        );
        // Quickly: on a new connection at once; on the connection the server is closing, once
        // that connection's last calls are drained (up to a 300 ms call).
        assert!(
            s.took < Duration::from_millis(600),
            "a refusal took {:?}: {err:?}",
            s.took
        );
    }
    assert!(
        !drained.is_empty(),
        "no call was running when the listener closed"
    );
    let status = status.unwrap_or_else(|| panic!("no exit within the grace period: {logs:?}"));
    assert!(status.success(), "exit status {status:?}: {logs:?}");
    assert!(
        exit_after < DRAIN_DELAY + GRACE,
        "exited {:.0} ms after SIGTERM",
        ms(exit_after)
    );
}

async fn aggregator_under_test() -> (Process, Vec<fanout_server::thread::ServerThread>) {
    let b1 = start_backend(backend_config("b1", "300ms"), 1);
    let b2 = start_backend(backend_config("b2", "300ms"), 1);
    let backends = [("b1", b1.url()), ("b2", b2.url())];
    let agg = tokio::task::spawn_blocking(move || aggregator_process(&backends, &SERVER_FLAGS))
        .await
        .unwrap();
    (agg, vec![b1, b2])
}

async fn aggregate_call(channel: Channel, caller: usize, i: u64) -> Result<(), tonic::Status> {
    let reply = AggregatorClient::new(channel)
        .aggregate(AggregateRequest {
            query: format!("c{caller}-{i}"),
            ..Default::default()
        })
        .await?
        .into_inner();
    match reply.summary {
        Some(s) if s.ok == 2 => Ok(()),
        _ => Err(tonic::Status::internal(format!("not all OK: {reply:?}"))),
    }
}

async fn backend_under_test() -> Process {
    let mut args = vec!["--latency", "300ms"];
    args.extend(SERVER_FLAGS);
    tokio::task::spawn_blocking(move || backend_process("b", "127.0.0.1:0", &args))
        .await
        .unwrap()
}

async fn fetch_call(channel: Channel, caller: usize, i: u64) -> Result<(), tonic::Status> {
    BackendClient::new(channel)
        .fetch(FetchRequest {
            query: format!("c{caller}-{i}"),
            ..Default::default()
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aggregator_drains_on_sigterm() {
    let (agg, _backends) = aggregator_under_test().await;
    sigterm_under_load(agg, 8, aggregate_call).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_drains_on_sigterm() {
    sigterm_under_load(backend_under_test().await, 8, fetch_call).await;
}

/// A health Watch stream still open (gRPC clients doing client-side health checking keep one
/// per connection) should not keep a server from exiting once its calls are done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_health_watch_does_not_hold_up_shutdown() {
    let (agg, _backends) = aggregator_under_test().await;
    let backend = backend_under_test().await;
    for (mut server, is_aggregator) in [(agg, true), (backend, false)] {
        let mut watch = watch_health(&server.url()).await;
        // One call in flight, so there is something to drain.
        let calls = channel(&server.url()).await;
        let in_flight = tokio::spawn(async move {
            if is_aggregator {
                aggregate_call(calls, 0, 0).await
            } else {
                fetch_call(calls, 0, 0).await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        let term_at = Instant::now();
        server.signal("TERM");
        let not_serving = watch.message().await.unwrap().unwrap();
        assert_eq!(not_serving.status(), ServingStatus::NotServing);
        let (status, server) = tokio::task::spawn_blocking(move || {
            (
                server.wait_exit(DRAIN_DELAY + GRACE + Duration::from_secs(3)),
                server,
            )
        })
        .await
        .unwrap();
        let exit_after = term_at.elapsed();
        let call = in_flight.await.unwrap();
        drop(watch);
        call.expect("the call in flight at SIGTERM completes");
        assert!(status.is_some_and(|s| s.success()), "{status:?}");
        // The drain delay, then the call's remaining 200 ms or so: not the 5 s grace period.
        assert!(
            exit_after < DRAIN_DELAY + Duration::from_secs(2),
            "exited {:.0} ms after SIGTERM, with only a health watch open: {:?}",
            ms(exit_after),
            server.log_lines("grace")
        );
    }
}
