//! `--backend-concurrency auto`: the limit falls when a backend falls behind and rises when it
//! recovers; calls over it fail fast, naming it; the wait for a slot never outlives the
//! deadline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout_proto::v1::AggregateRequest;
use fanout_proto::v1::backend_result::Outcome;
use fanout_tests::*;

/// The backend's limit as the aggregator's Stats reports it.
async fn limit_of(agg: &fanout_server::thread::ServerThread) -> u64 {
    aggregator_stats(&mut aggregator_client(agg).await)
        .await
        .backends[0]
        .limit
}

/// `callers` calls at a time asking the backend to wait `delay_ms`, for `for_how_long`; returns
/// (ok, refused over the limit, longest refusal).
async fn load(
    agg: &fanout_server::thread::ServerThread,
    callers: usize,
    delay_ms: u32,
    for_how_long: Duration,
) -> (usize, usize, Duration) {
    let client = aggregator_client(agg).await;
    let stop = Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let (mut c, stop) = (client.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut refused, mut slowest) = (0, 0, Duration::ZERO);
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    i += 1;
                    let began = Instant::now();
                    let reply = c
                        .aggregate(AggregateRequest {
                            delay_ms: Some(delay_ms),
                            ..aggregate(&format!("c{caller}-{i}"))
                        })
                        .await;
                    let Ok(reply) = reply else { continue };
                    match &reply.into_inner().results[0].outcome {
                        Some(Outcome::Reply(_)) => ok += 1,
                        Some(Outcome::Failure(f)) => {
                            // Over the limit: fast, and naming it.
                            assert_eq!(f.code_name, "RESOURCE_EXHAUSTED", "{f:?}");
                            assert!(f.message.contains("--backend-concurrency auto"), "{f:?}");
                            refused += 1;
                            slowest = slowest.max(began.elapsed());
                        }
                        None => unreachable!(),
                    }
                }
                (ok, refused, slowest)
            })
        })
        .collect();
    tokio::time::sleep(for_how_long).await;
    stop.store(true, Ordering::Relaxed);
    let mut total = (0, 0, Duration::ZERO);
    for t in tasks {
        let (ok, refused, slowest) = t.await.unwrap();
        total = (total.0 + ok, total.1 + refused, total.2.max(slowest));
    }
    total
}

/// An aggregator with adaptive backend limits over `b`, admitting calls as `admission` says.
fn adaptive_over(
    b: &fanout_server::thread::ServerThread,
    admission: aggregator::Admission,
) -> fanout_server::thread::ServerThread {
    start_aggregator(
        AggregatorConfig {
            allow_overrides: true,
            backend_concurrency: aggregator::Limit::Auto,
            max_in_flight: admission,
            ..aggregator_config(vec![spec("b", b)])
        },
        2,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_overload_the_limit_falls_and_calls_over_it_fail_fast() {
    // Four calls at a time, the rest in line: at 40 ms a call, 100 calls a second.
    let b = start_backend(
        BackendConfig {
            capacity: Some(4),
            allow_overrides: true,
            ..backend_config("b", "40ms")
        },
        2,
    );
    // Admission out of the way, so that calls reach the backend's limit (with `auto` they are
    // shed at the door first: see the next test).
    let agg = adaptive_over(&b, aggregator::Admission::Fixed(1000));
    let start = limit_of(&agg).await;
    // 32 callers against a backend that takes 4: its line grows, the limit follows it down.
    let (ok, refused, slowest) = load(&agg, 32, 40, Duration::from_secs(3)).await;
    let fallen = limit_of(&agg).await;
    println!(
        "overloaded: limit {start} -> {fallen}; {ok} answered ({:.0}/s of 100/s), {refused} \
         refused (slowest refusal {slowest:?})",
        ok as f64 / 3.0
    );
    assert!(
        fallen * 2 < start,
        "the limit did not fall: {start} -> {fallen}"
    );
    assert!(refused > 0, "nothing was refused over the limit");
    // A refusal is fast: the queue timeout (20 ms) and a little (this machine is shared), not
    // the 2 s deadline a line at the backend would take.
    assert!(slowest < Duration::from_millis(600), "{slowest:?}");
    // The backend kept working at its capacity meanwhile.
    assert!(ok >= 150, "only {ok} answered in 3 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_admission_sheds_the_excess_whole_so_admitted_calls_get_every_backend() {
    let b = start_backend(
        BackendConfig {
            capacity: Some(4),
            allow_overrides: true,
            ..backend_config("b", "40ms")
        },
        2,
    );
    let agg = adaptive_over(&b, aggregator::Admission::Auto);
    let client = aggregator_client(&agg).await;
    // Warm the limit down to the backend (as above), then count what a burst gets.
    load(&agg, 32, 40, Duration::from_secs(2)).await;
    let calls: Vec<_> = (0..64)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let began = Instant::now();
                let reply = c
                    .aggregate(AggregateRequest {
                        delay_ms: Some(40),
                        ..aggregate(&format!("burst-{i}"))
                    })
                    .await;
                (reply, began.elapsed())
            })
        })
        .collect();
    let (mut shed, mut whole, mut slowest_shed) = (0, 0, Duration::ZERO);
    for call in calls {
        let (reply, took) = call.await.unwrap();
        match reply {
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(status.message().contains("--max-in-flight"), "{status:?}");
                shed += 1;
                slowest_shed = slowest_shed.max(took);
            }
            Ok(reply) => {
                let r = &reply.into_inner().results[0];
                assert!(matches!(r.outcome, Some(Outcome::Reply(_))), "{r:?}");
                whole += 1;
            }
        }
    }
    let limit = limit_of(&agg).await;
    println!("limit {limit}: of 64 at once, {whole} admitted and answered, {shed} shed");
    assert!(shed > 0 && whole > 0, "{whole} answered, {shed} shed");
    // Shed at the door: at once, not after a wait (generous: this machine is shared).
    assert!(
        slowest_shed < Duration::from_millis(300),
        "{slowest_shed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_limit_falls_when_a_backend_slows_and_rises_when_it_recovers() {
    let b = start_backend(
        BackendConfig {
            allow_overrides: true,
            ..backend_config("b", "20ms")
        },
        2,
    );
    let agg = adaptive_over(&b, aggregator::Admission::Auto);
    // 16 callers at 20 ms: the no-load latency.
    load(&agg, 16, 20, Duration::from_secs(1)).await;
    let before = limit_of(&agg).await;
    // The backend slows to 100 ms a call: the slower answers read as a line, and the limit
    // falls at once (a probe then finds the backend itself slower, not queueing, and gives
    // the limit back: the lowest value is what shows the fall).
    let mut client = aggregator_client(&agg).await;
    let watching = Arc::new(AtomicBool::new(true));
    let watcher = {
        let watching = watching.clone();
        tokio::spawn(async move {
            let mut lowest = u64::MAX;
            while watching.load(Ordering::Relaxed) {
                lowest = lowest.min(aggregator_stats(&mut client).await.backends[0].limit);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            lowest
        })
    };
    load(&agg, 16, 100, Duration::from_secs(1)).await;
    watching.store(false, Ordering::Relaxed);
    let slowed = watcher.await.unwrap();
    // It recovers: the limit is back up.
    load(&agg, 16, 20, Duration::from_millis(1500)).await;
    let recovered = limit_of(&agg).await;
    println!("limit {before} at 20 ms, down to {slowed} at 100 ms, {recovered} back at 20 ms");
    assert!(
        slowed * 2 < before,
        "the limit did not fall: {before} -> {slowed}"
    );
    assert!(
        recovered >= slowed * 2,
        "the limit did not rise: {slowed} -> {recovered}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wait_for_a_slot_never_outlives_the_deadline() {
    let b = start_backend(backend_config("b", "300ms"), 2);
    let agg = start_aggregator(
        AggregatorConfig {
            backend_concurrency: aggregator::Limit::Fixed(1),
            queue_timeout: Some(Duration::from_secs(5)),
            ..aggregator_config(vec![spec("b", &b)])
        },
        2,
    );
    let client = aggregator_client(&agg).await;
    let mut first = client.clone();
    let holder = tokio::spawn(async move { first.aggregate(aggregate("holds the slot")).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let began = Instant::now();
    let reply = client
        .clone()
        .aggregate(AggregateRequest {
            deadline_ms: Some(60),
            ..aggregate("waits")
        })
        .await
        .unwrap()
        .into_inner();
    let took = began.elapsed();
    let r = &reply.results[0];
    println!("{r:?} after {took:?}");
    assert_eq!(outcome_code(r), "DEADLINE_EXCEEDED", "{r:?}");
    // By the deadline and a little (this machine is shared): not the 5 s queue timeout.
    assert!(took < Duration::from_secs(1), "{took:?}");
    holder.await.unwrap().unwrap();
}
