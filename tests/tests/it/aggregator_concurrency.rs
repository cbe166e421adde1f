//! Concurrent fan-out takes about as long as the slowest backend; sequential and blocking
//! fan-out take about the sum.

use std::time::{Duration, Instant};

use fanout_proto::v1::{AggregateRequest, Fanout};
use fanout_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_takes_the_slowest_sequential_the_sum() {
    let a = start_backend(backend_config("a", "200ms"), 2);
    let b = start_backend(backend_config("b", "200ms"), 2);
    let c = start_backend(backend_config("c", "200ms"), 2);
    let config = AggregatorConfig {
        allow_overrides: true,
        ..aggregator_config(vec![spec("a", &a), spec("b", &b), spec("c", &c)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    client.aggregate(aggregate("warm-up")).await.unwrap();

    let timed = |fanout: Fanout| {
        let mut client = client.clone();
        async move {
            let start = Instant::now();
            let reply = client
                .aggregate(AggregateRequest {
                    fanout: Some(fanout.into()),
                    ..aggregate("q")
                })
                .await
                .unwrap()
                .into_inner();
            let took = start.elapsed();
            let summary = reply.summary.unwrap();
            assert_eq!(
                (summary.ok, summary.failed, summary.timed_out),
                (3, 0, 0),
                "{fanout:?}"
            );
            took
        }
    };
    let concurrent = timed(Fanout::Concurrent).await;
    let sequential = timed(Fanout::Sequential).await;
    let blocking = timed(Fanout::Blocking).await;
    eprintln!("concurrent {concurrent:?}, sequential {sequential:?}, blocking {blocking:?}");

    assert!(concurrent >= Duration::from_millis(200), "{concurrent:?}");
    assert!(sequential >= Duration::from_millis(600), "{sequential:?}");
    assert!(blocking >= Duration::from_millis(600), "{blocking:?}");
    // Theory: 3x. A noisy machine may blur it, but not to overlap.
    let ratio = sequential.as_secs_f64() / concurrent.as_secs_f64();
    assert!(ratio > 2.2, "sequential/concurrent = {ratio:.2}");
    let ratio = blocking.as_secs_f64() / concurrent.as_secs_f64();
    assert!(ratio > 2.2, "blocking/concurrent = {ratio:.2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_fanout_stalls_the_aggregator_while_concurrent_does_not() {
    // One aggregator worker: while a blocking fan-out waits, nothing else runs on it.
    let slow = start_backend(backend_config("slow", "300ms"), 2);
    let config = AggregatorConfig {
        allow_overrides: true,
        ..aggregator_config(vec![spec("slow", &slow)])
    };
    let agg = start_aggregator(config, 1);
    let client = aggregator_client(&agg).await;

    let four = |fanout: Fanout| {
        let client = client.clone();
        async move {
            let start = Instant::now();
            let calls: Vec<_> = (0..4)
                .map(|_| {
                    let mut c = client.clone();
                    tokio::spawn(async move {
                        c.aggregate(AggregateRequest {
                            fanout: Some(fanout.into()),
                            ..aggregate("q")
                        })
                        .await
                    })
                })
                .collect();
            for call in calls {
                call.await.unwrap().unwrap();
            }
            start.elapsed()
        }
    };
    let concurrent = four(Fanout::Concurrent).await;
    let blocking = four(Fanout::Blocking).await;
    eprintln!("4 calls on 1 worker: concurrent {concurrent:?}, blocking {blocking:?}");
    // Blocking serializes the four calls on the one worker: ~1200 ms against ~300 ms.
    assert!(blocking >= Duration::from_millis(1100), "{blocking:?}");
    assert!(blocking.as_secs_f64() / concurrent.as_secs_f64() > 2.5);
}
