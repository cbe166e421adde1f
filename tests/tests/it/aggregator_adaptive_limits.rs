//! `--backend-concurrency auto` and `--max-in-flight auto`: nothing is refused until a backend
//! is overloaded (calls piling up, answers slowing down); then calls past its limit are
//! refused fast, naming it, while the backend keeps working at its capacity; a backend that
//! only got slower, a closed loop of callers and a cold burst are not overload. The wait for a
//! slot never outlives the deadline.

use std::time::{Duration, Instant};

use fanout_proto::v1::backend_result::Outcome;
use fanout_proto::v1::{AggregateReply, AggregateRequest, BackendLimitStats};
use fanout_tests::load::{Sample, open_loop};
use fanout_tests::*;

/// The backend's limit as the aggregator's Stats reports it.
async fn limit_of(agg: &fanout_server::thread::ServerThread) -> BackendLimitStats {
    aggregator_stats(&mut aggregator_client(agg).await)
        .await
        .backends
        .remove(0)
}

/// What the calls of a load came to.
#[derive(Debug, Default)]
struct Tally {
    answered: usize,
    /// Refused whole at the door (RESOURCE_EXHAUSTED naming the overloaded backend).
    shed: usize,
    /// Admitted, but the backend's part refused past its limit.
    refused_part: usize,
    other: Vec<String>,
    slowest_refusal: Duration,
}

fn tally(samples: &[Sample<Result<AggregateReply, tonic::Status>>]) -> Tally {
    let mut t = Tally::default();
    for s in samples {
        match &s.value {
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(
                    status.message().contains("backend b is overloaded"),
                    "{status:?}"
                );
                t.shed += 1;
                t.slowest_refusal = t.slowest_refusal.max(s.took);
            }
            Err(status) => t.other.push(format!("{status:?}")),
            Ok(reply) => match &reply.results[0].outcome {
                Some(Outcome::Reply(_)) => t.answered += 1,
                Some(Outcome::Failure(f)) if f.code_name == "RESOURCE_EXHAUSTED" => {
                    assert!(f.message.contains("--backend-concurrency auto"), "{f:?}");
                    t.refused_part += 1;
                    t.slowest_refusal = t.slowest_refusal.max(s.took);
                }
                other => t.other.push(format!("{other:?}")),
            },
        }
    }
    t
}

/// An open loop of `rate` calls/s for `duration` asking the backend to wait `delay_ms`.
async fn offer(
    agg: &fanout_server::thread::ServerThread,
    rate: f64,
    duration: Duration,
    delay_ms: u32,
) -> Vec<Sample<Result<AggregateReply, tonic::Status>>> {
    let client = aggregator_client(agg).await;
    open_loop(rate, duration, 4, move |i| {
        let mut c = client.clone();
        async move {
            c.aggregate(AggregateRequest {
                delay_ms: Some(delay_ms),
                ..aggregate(&format!("q{i}"))
            })
            .await
            .map(tonic::Response::into_inner)
        }
    })
    .await
}

/// A backend that works on four calls at once (40 ms each: 100 calls/s), the rest in line.
fn backend_of_capacity_four() -> fanout_server::thread::ServerThread {
    start_backend(
        BackendConfig {
            capacity: Some(4),
            allow_overrides: true,
            ..backend_config("b", "40ms")
        },
        2,
    )
}

/// An aggregator with the adaptive defaults over `b`, admitting calls as `admission` says.
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
async fn under_overload_auto_admission_sheds_the_excess_whole_and_fast() {
    let b = backend_of_capacity_four();
    let agg = adaptive_over(&b, aggregator::Admission::Auto);
    let before = limit_of(&agg).await;
    // Three times what the backend takes: for 1 s, while the limit finds the overload (the
    // calls let in before it did wait in a line, and some run out of time), then for 2 s.
    let warming = tally(&offer(&agg, 300.0, Duration::from_secs(1), 40).await);
    let t = tally(&offer(&agg, 300.0, Duration::from_secs(2), 40).await);
    let after = limit_of(&agg).await;
    println!(
        "limit {} -> {}: warming {} answered, {} shed, {} other; then {t:?}",
        before.limit,
        after.limit,
        warming.answered,
        warming.shed,
        warming.other.len()
    );
    assert!(!before.overloaded && after.overloaded, "{after:?}");
    assert!(after.limit <= 20, "the limit did not fall: {after:?}");
    assert!(
        t.shed > 0 && after.refused_at_door > 0,
        "nothing shed: {t:?}"
    );
    // Admitted calls get the backend: shed whole, not degraded.
    assert!(t.refused_part * 20 <= t.answered, "{t:?}");
    assert!(t.other.is_empty(), "{t:?}");
    // A refusal is fast (generous: this machine is shared), not the 2 s a line would take.
    assert!(t.slowest_refusal < Duration::from_millis(600), "{t:?}");
    // The backend kept working at its capacity meanwhile (100/s).
    assert!(t.answered >= 150, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_fixed_admission_calls_over_the_limit_fail_their_part_fast() {
    let b = backend_of_capacity_four();
    // The door is the operator's fixed number: calls reach the backend's limit.
    let agg = adaptive_over(&b, aggregator::Admission::Fixed(1000));
    let t = tally(&offer(&agg, 300.0, Duration::from_secs(3), 40).await);
    let after = limit_of(&agg).await;
    println!("limit {}: {t:?}", after.limit);
    assert!(after.overloaded && after.limit <= 20, "{after:?}");
    assert!(t.refused_part > 0 && t.shed == 0, "{t:?}");
    assert!(t.slowest_refusal < Duration::from_millis(600), "{t:?}");
    assert!(t.answered >= 200, "{t:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_only_got_slower_is_not_refused_anything() {
    let b = start_backend(
        BackendConfig {
            allow_overrides: true,
            ..backend_config("b", "20ms")
        },
        2,
    );
    let agg = adaptive_over(&b, aggregator::Admission::Auto);
    // 100 calls/s at 20 ms, then at 100 ms: five times the calls in flight, none piling up.
    let fast = tally(&offer(&agg, 100.0, Duration::from_secs(1), 20).await);
    let slow = tally(&offer(&agg, 100.0, Duration::from_secs(2), 100).await);
    let after = limit_of(&agg).await;
    println!("{fast:?} then {slow:?}; {after:?}");
    assert_eq!((fast.shed, fast.refused_part), (0, 0), "{fast:?}");
    assert_eq!((slow.shed, slow.refused_part), (0, 0), "{slow:?}");
    assert!(!after.overloaded, "{after:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_wait_for_each_answer_are_not_refused_and_a_cold_burst_is_taken_whole() {
    let b = backend_of_capacity_four();
    let agg = adaptive_over(&b, aggregator::Admission::Auto);
    let client = aggregator_client(&agg).await;
    // 32 at once on a fresh aggregator, then again and again as answers come (a closed loop):
    // eight times what the backend takes at once, each call waiting its turn in the line, well
    // within its deadline. Nothing piles up: callers send as fast as answers come.
    let began = Instant::now();
    let mut answered = 0;
    while began.elapsed() < Duration::from_secs(2) {
        let calls: Vec<_> = (0..32)
            .map(|i| {
                let mut c = client.clone();
                tokio::spawn(async move {
                    c.aggregate(AggregateRequest {
                        delay_ms: Some(40),
                        ..aggregate(&format!("burst-{i}"))
                    })
                    .await
                })
            })
            .collect();
        for call in calls {
            let reply = call.await.unwrap().expect("not refused");
            assert_eq!(outcome_code(&reply.get_ref().results[0]), "OK");
            answered += 1;
        }
    }
    let after = limit_of(&agg).await;
    println!("{answered} answered; {after:?}");
    assert!(!after.overloaded, "{after:?}");
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
