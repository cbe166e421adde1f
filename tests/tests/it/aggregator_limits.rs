//! Per-backend concurrency limits, and shedding past --max-in-flight.

use std::time::{Duration, Instant};

use fanout_tests::*;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_never_sees_more_than_its_limit() {
    let b = start_backend(backend_config("b", "100ms"), 2);
    let config = AggregatorConfig {
        backend_concurrency: aggregator::Limit::Fixed(2),
        ..aggregator_config(vec![spec("b", &b)])
    };
    let agg = start_aggregator(config, 2);
    let client = aggregator_client(&agg).await;
    let calls: Vec<_> = (0..8)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { c.aggregate(aggregate(&format!("q{i}"))).await })
        })
        .collect();
    for call in calls {
        let reply = call.await.unwrap().unwrap().into_inner();
        assert_eq!(outcome_code(&reply.results[0]), "OK", "{reply:?}");
    }
    let stats = backend_stats(&mut backend_client(&b).await).await;
    assert_eq!(stats.max_in_flight, 2, "{stats:?}");
    assert_eq!(stats.served, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_max_in_flight_are_shed_at_once() {
    let b = start_backend(backend_config("b", "1s"), 2);
    let config = AggregatorConfig {
        max_in_flight: aggregator::Admission::Fixed(2),
        ..aggregator_config(vec![spec("b", &b)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let admitted: Vec<_> = (0..2)
        .map(|_| {
            let mut c = client.clone();
            tokio::spawn(async move { c.aggregate(aggregate("q")).await })
        })
        .collect();
    let full = eventually(Duration::from_secs(5), || {
        let mut c = client.clone();
        async move { aggregator_stats(&mut c).await.in_flight == 2 }
    })
    .await;
    assert!(full, "the two calls never got in flight");

    for _ in 0..5 {
        let start = Instant::now();
        let err = client.aggregate(aggregate("q")).await.unwrap_err();
        let took = start.elapsed();
        assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
        assert!(err.message().contains("--max-in-flight"), "{err:?}");
        // At once: not after waiting for a slot (the admitted calls take 1 s).
        assert!(took < Duration::from_millis(300), "shedding took {took:?}");
    }
    for call in admitted {
        call.await.unwrap().expect("admitted calls complete");
    }
    let stats = aggregator_stats(&mut client).await;
    assert_eq!(stats.shed, 5, "{stats:?}");
}
