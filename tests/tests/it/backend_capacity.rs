//! `--capacity N`: a backend works on at most N calls at once and the rest wait their turn, so
//! past N/latency calls a second its latency grows with the line, as a real server's does.

use std::time::{Duration, Instant};

use fanout_tests::*;

/// Six calls at once to a 100 ms backend; how long the last one took.
async fn six_at_once(capacity: Option<usize>) -> Duration {
    let b = start_backend(
        BackendConfig {
            capacity,
            ..backend_config("b", "100ms")
        },
        2,
    );
    let client = backend_client(&b).await;
    let started = Instant::now();
    let calls: Vec<_> = (0..6)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { c.fetch(fetch(&format!("q{i}"))).await.unwrap() })
        })
        .collect();
    for c in calls {
        c.await.unwrap();
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_past_the_capacity_wait_their_turn() {
    let unlimited = six_at_once(None).await;
    let two_at_a_time = six_at_once(Some(2)).await;
    println!(
        "six 100 ms calls at once: {unlimited:?} unlimited, {two_at_a_time:?} with --capacity 2"
    );
    // Theory: 100 ms, and three turns of 100 ms.
    assert!(unlimited < Duration::from_millis(250), "{unlimited:?}");
    assert!(
        two_at_a_time >= Duration::from_millis(290),
        "{two_at_a_time:?}"
    );
    assert!(
        two_at_a_time.as_secs_f64() / unlimited.as_secs_f64() > 2.0,
        "{two_at_a_time:?} against {unlimited:?}"
    );
}
