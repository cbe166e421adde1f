//! AggregateStream sends each backend's result the moment it completes, in completion order,
//! then the summary.

use std::time::{Duration, Instant};

use fanout_proto::v1::aggregate_event::Event;
use fanout_tests::*;

#[tokio::test]
async fn results_stream_in_completion_order_then_the_summary() {
    let slow = start_backend(backend_config("slow", "800ms"), 2);
    let fast = start_backend(backend_config("fast", "20ms"), 2);
    let mid = start_backend(backend_config("mid", "200ms"), 2);
    // Configured slowest first: the order of the stream must come from completion, not config.
    let config = aggregator_config(vec![
        spec("slow", &slow),
        spec("mid", &mid),
        spec("fast", &fast),
    ]);
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;

    let start = Instant::now();
    let mut stream = client
        .aggregate_stream(aggregate("q"))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    while let Some(event) = stream.message().await.unwrap() {
        match event.event.unwrap() {
            Event::Result(r) => seen.push((r.backend.clone(), start.elapsed())),
            Event::Summary(s) => {
                assert_eq!((s.ok, s.failed, s.timed_out), (3, 0, 0));
                seen.push(("summary".into(), start.elapsed()));
            }
        }
    }
    let names: Vec<&str> = seen.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["fast", "mid", "slow", "summary"]);
    // The fast result arrived long before the slow backend finished.
    let fast_at = seen[0].1;
    assert!(
        fast_at < Duration::from_millis(500),
        "fast result arrived after {fast_at:?}"
    );
    assert!(seen[2].1 >= Duration::from_millis(800));
}

#[tokio::test]
async fn a_bad_request_fails_the_stream_before_any_event() {
    let b = start_backend(backend_config("b", "1ms"), 2);
    let agg = start_aggregator(aggregator_config(vec![spec("b", &b)]), 2);
    let mut client = aggregator_client(&agg).await;
    let req = fanout_proto::v1::AggregateRequest {
        backends: vec!["nope".into()],
        ..aggregate("q")
    };
    let err = client.aggregate_stream(req).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}
