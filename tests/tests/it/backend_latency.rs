//! Latency specs are honoured over the wire (generous bounds: the machine is shared).

use std::time::{Duration, Instant};

use fanout_tests::*;

#[tokio::test]
async fn a_fixed_latency_is_waited() {
    let server = start_backend(backend_config("fixed", "150ms"), 2);
    let mut client = backend_client(&server).await;
    client.fetch(fetch("warm-up")).await.unwrap();
    let start = Instant::now();
    let reply = client.fetch(fetch("q")).await.unwrap().into_inner();
    let took = start.elapsed();
    assert_eq!(reply.delay_ms, 150);
    assert!(
        took >= Duration::from_millis(150),
        "answered after {took:?}"
    );
    assert!(
        took < Duration::from_millis(1500),
        "answered after {took:?}"
    );
}

#[tokio::test]
async fn a_uniform_latency_stays_in_its_range() {
    let server = start_backend(backend_config("uniform", "uniform:5ms..25ms"), 2);
    let mut client = backend_client(&server).await;
    let mut seen = Vec::new();
    for _ in 0..40 {
        seen.push(
            client
                .fetch(fetch("q"))
                .await
                .unwrap()
                .into_inner()
                .delay_ms,
        );
    }
    assert!(seen.iter().all(|d| (5..=25).contains(d)), "{seen:?}");
    let distinct = seen.iter().collect::<std::collections::HashSet<_>>().len();
    assert!(
        distinct > 5,
        "40 draws gave only {distinct} distinct delays: {seen:?}"
    );
}

#[tokio::test]
async fn a_tail_spec_makes_a_few_calls_slow() {
    let config = BackendConfig {
        seed: Some(3),
        ..backend_config("tail", "tail:1ms,p=0.2,30ms")
    };
    let server = start_backend(config, 2);
    let mut client = backend_client(&server).await;
    let mut slow = 0;
    for _ in 0..200 {
        let d = client
            .fetch(fetch("q"))
            .await
            .unwrap()
            .into_inner()
            .delay_ms;
        assert!(d == 1 || d == 30, "{d}");
        slow += usize::from(d == 30);
    }
    assert!(
        (15..=70).contains(&slow),
        "{slow} slow calls of 200 at p=0.2"
    );
}
