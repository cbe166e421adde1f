//! When the caller goes away, the outstanding backend calls are cancelled.

use std::time::Duration;

use fanout_proto::v1::aggregate_event::Event;
use fanout_tests::*;

fn settled(
    backend: &fanout_server::thread::ServerThread,
) -> impl std::future::Future<Output = bool> {
    let url = backend.url();
    eventually(Duration::from_secs(5), move || {
        let url = url.clone();
        async move {
            let mut c = fanout_proto::v1::backend_client::BackendClient::connect(url)
                .await
                .unwrap();
            let s = backend_stats(&mut c).await;
            s.in_flight == 0 && s.cancelled >= 1
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_gives_up_cancels_the_backend_calls() {
    let slow = start_backend(backend_config("slow", "10s"), 2);
    let other = start_backend(backend_config("other", "10s"), 2);
    let agg = start_aggregator(
        AggregatorConfig {
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(30),
            ..aggregator_config(vec![spec("slow", &slow), spec("other", &other)])
        },
        2,
    );
    let mut client = aggregator_client(&agg).await;

    // The caller waits 300 ms of a 10 s call, then drops it (as a client that disconnects).
    let call = tokio::time::timeout(Duration::from_millis(300), client.aggregate(aggregate("q")));
    assert!(call.await.is_err(), "the call should still be running");

    assert!(
        settled(&slow).await,
        "slow backend did not see its call cancelled"
    );
    assert!(
        settled(&other).await,
        "other backend did not see its call cancelled"
    );
    let in_flight_zero = eventually(Duration::from_secs(5), || {
        let mut c = client.clone();
        async move {
            let s = aggregator_stats(&mut c).await;
            s.in_flight == 0 && s.cancelled == 1
        }
    })
    .await;
    assert!(in_flight_zero, "{:?}", aggregator_stats(&mut client).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_stream_cancels_the_backends_still_running() {
    let fast = start_backend(backend_config("fast", "10ms"), 2);
    let slow = start_backend(backend_config("slow", "10s"), 2);
    let agg = start_aggregator(
        AggregatorConfig {
            deadline: Duration::from_secs(30),
            attempt_timeout: Duration::from_secs(30),
            ..aggregator_config(vec![spec("fast", &fast), spec("slow", &slow)])
        },
        2,
    );
    let mut client = aggregator_client(&agg).await;
    let mut stream = client
        .aggregate_stream(aggregate("q"))
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert!(matches!(first.event, Some(Event::Result(ref r)) if r.backend == "fast"));
    drop(stream);
    assert!(
        settled(&slow).await,
        "the slow backend's call outlived the stream"
    );
    let mut fast_client = backend_client(&fast).await;
    assert_eq!(backend_stats(&mut fast_client).await.cancelled, 0);
}
