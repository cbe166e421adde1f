//! The lesson in one test: with one runtime worker, calls that block the worker serialize,
//! while calls that await overlap.

use std::time::{Duration, Instant};

use fanout_proto::v1::Mode;
use fanout_tests::*;

/// Sends four 200 ms calls at once to a one-worker backend in `mode`; returns the wall time.
async fn four_concurrent_calls(mode: Mode) -> Duration {
    let config = BackendConfig {
        mode,
        ..backend_config("one-worker", "200ms")
    };
    let server = start_backend(config, 1);
    let client = backend_client(&server).await;
    let start = Instant::now();
    let calls = (0..4).map(|i| {
        let mut c = client.clone();
        tokio::spawn(async move { c.fetch(fetch(&format!("q{i}"))).await })
    });
    for call in calls.collect::<Vec<_>>() {
        call.await.unwrap().expect("call succeeds");
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_serializes_while_async_overlaps() {
    let blocking = four_concurrent_calls(Mode::Blocking).await;
    let overlapped = four_concurrent_calls(Mode::Async).await;
    let pooled = four_concurrent_calls(Mode::SpawnBlocking).await;
    eprintln!("blocking {blocking:?}, async {overlapped:?}, spawn-blocking {pooled:?}");
    // Theory: 800 ms against 200 ms. Allow for a noisy machine, but not for overlap.
    assert!(
        blocking >= Duration::from_millis(750),
        "blocking took {blocking:?}"
    );
    assert!(
        blocking.as_secs_f64() / overlapped.as_secs_f64() > 2.5,
        "blocking {blocking:?} vs async {overlapped:?}"
    );
    assert!(
        blocking.as_secs_f64() / pooled.as_secs_f64() > 2.5,
        "blocking {blocking:?} vs spawn-blocking {pooled:?}"
    );
}
