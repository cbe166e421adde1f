//! Per-attempt timeouts, the overall deadline, and its propagation to backends.

use std::time::{Duration, Instant};

use fanout_proto::v1::AggregateRequest;
use fanout_proto::v1::backend_result::Outcome;
use fanout_tests::*;

#[tokio::test]
async fn an_attempt_timeout_bounds_each_attempt() {
    let slow = start_backend(backend_config("slow", "800ms"), 2);
    let config = AggregatorConfig {
        retry: aggregator::RetryPolicy {
            max_attempts: 2,
            ..Default::default()
        },
        ..aggregator_config(vec![spec("slow", &slow)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let start = Instant::now();
    let reply = client
        .aggregate(AggregateRequest {
            attempt_timeout_ms: Some(100),
            ..aggregate("q")
        })
        .await
        .unwrap()
        .into_inner();
    let took = start.elapsed();
    let r = &reply.results[0];
    assert_eq!(outcome_code(r), "DEADLINE_EXCEEDED", "{r:?}");
    assert_eq!(r.attempts, 2, "an attempt's timeout is retried: {r:?}");
    assert!(
        took < Duration::from_millis(700),
        "two 100 ms attempts took {took:?}"
    );
    assert_eq!(reply.summary.unwrap().timed_out, 1);
}

#[tokio::test]
async fn the_overall_deadline_ends_the_call_with_partial_results() {
    let fast = start_backend(backend_config("fast", "10ms"), 2);
    let slow = start_backend(backend_config("slow", "5s"), 2);
    let agg = start_aggregator(
        aggregator_config(vec![spec("fast", &fast), spec("slow", &slow)]),
        2,
    );
    let mut client = aggregator_client(&agg).await;

    let start = Instant::now();
    let reply = client
        .aggregate(AggregateRequest {
            deadline_ms: Some(300),
            ..aggregate("q")
        })
        .await
        .unwrap()
        .into_inner();
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(
        took < Duration::from_millis(1000),
        "a 300 ms deadline took {took:?}"
    );
    let codes: Vec<(String, String)> = reply
        .results
        .iter()
        .map(|r| (r.backend.clone(), outcome_code(r)))
        .collect();
    assert_eq!(
        codes,
        [
            ("fast".into(), "OK".into()),
            ("slow".into(), "DEADLINE_EXCEEDED".into())
        ]
    );
    assert_eq!(
        reply.results[1].attempts, 1,
        "the deadline, not an attempt timeout: no retry"
    );
}

#[tokio::test]
async fn the_callers_grpc_timeout_is_a_deadline_too() {
    let slow = start_backend(backend_config("slow", "5s"), 2);
    let agg = start_aggregator(aggregator_config(vec![spec("slow", &slow)]), 2);
    let mut client = aggregator_client(&agg).await;
    let mut req = tonic::Request::new(aggregate("q"));
    req.set_timeout(Duration::from_millis(400));
    let start = Instant::now();
    // The aggregator finishes just inside the caller's deadline, with the partial result.
    let reply = client
        .aggregate(req)
        .await
        .expect("answered before the caller's deadline");
    assert!(
        start.elapsed() < Duration::from_millis(1000),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(
        outcome_code(&reply.into_inner().results[0]),
        "DEADLINE_EXCEEDED"
    );
}

#[tokio::test]
async fn backends_are_told_the_time_that_remains() {
    let a = start_backend(backend_config("a", "0ms"), 2);
    let b = start_backend(backend_config("b", "150ms"), 2);
    let config = AggregatorConfig {
        fanout: fanout_proto::v1::Fanout::Sequential,
        ..aggregator_config(vec![spec("b", &b), spec("a", &a)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let reply = client
        .aggregate(AggregateRequest {
            deadline_ms: Some(600),
            ..aggregate("q")
        })
        .await
        .unwrap()
        .into_inner();
    // Sequential: b first (150 ms), then a with what is left of 600 ms.
    let seen = |name: &str| {
        let r = reply.results.iter().find(|r| r.backend == name).unwrap();
        match &r.outcome {
            Some(Outcome::Reply(reply)) => reply.grpc_timeout_ms.expect("grpc-timeout sent"),
            other => panic!("{other:?}"),
        }
    };
    let (first, second) = (seen("b"), seen("a"));
    eprintln!("b saw {first} ms, a saw {second} ms");
    assert!(
        first <= 600 && first > 400,
        "b saw {first} ms of a 600 ms deadline"
    );
    assert!(second <= 600 - 150, "a saw {second} ms after 150 ms of b");
    assert!(second > 100, "a saw {second} ms");
}
