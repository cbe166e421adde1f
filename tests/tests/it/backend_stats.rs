//! `Stats` counts what the backend saw: served, failed, in flight, and calls the caller
//! abandoned.

use std::time::Duration;

use fanout_proto::v1::FetchRequest;
use fanout_tests::*;

#[tokio::test]
async fn stats_count_served_failed_and_cancelled_calls() {
    let config = BackendConfig {
        allow_overrides: true,
        ..backend_config("counted", "1ms")
    };
    let server = start_backend(config, 2);
    let mut client = backend_client(&server).await;

    client.fetch(fetch("a")).await.unwrap();
    client.fetch(fetch("b")).await.unwrap();
    client
        .fetch(FetchRequest {
            fail: Some(true),
            ..fetch("c")
        })
        .await
        .unwrap_err();

    // A call whose caller gives up after 100 ms of a 2 s wait: the backend abandons it.
    let mut req = tonic::Request::new(FetchRequest {
        delay_ms: Some(2_000),
        ..fetch("slow")
    });
    req.set_timeout(Duration::from_millis(100));
    let err = client.fetch(req).await.unwrap_err();
    assert!(
        matches!(
            err.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{err:?}"
    );

    // And one the caller drops mid-flight without any deadline.
    let mut c = client.clone();
    let dropped = tokio::spawn(async move {
        c.fetch(FetchRequest {
            delay_ms: Some(5_000),
            ..fetch("dropped")
        })
        .await
    });
    assert!(
        eventually(Duration::from_secs(5), || {
            let mut c = client.clone();
            async move { backend_stats(&mut c).await.in_flight == 1 }
        })
        .await,
        "the dropped call never started"
    );
    dropped.abort();

    let settled = eventually(Duration::from_secs(5), || {
        let mut c = client.clone();
        async move {
            let s = backend_stats(&mut c).await;
            s.cancelled == 2 && s.in_flight == 0
        }
    })
    .await;
    let s = backend_stats(&mut client).await;
    assert!(settled, "{s:?}");
    assert_eq!((s.served, s.failed, s.cancelled), (3, 1, 2), "{s:?}");
    assert!(s.max_in_flight >= 1, "{s:?}");
    assert_eq!(s.name, "counted");
}
