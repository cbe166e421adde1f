//! Per-request overrides: refused unless the backend allows them, and bounded when it does.

use std::time::{Duration, Instant};

use fanout_proto::v1::FetchRequest;
use fanout_tests::*;
use tonic::Code;

#[tokio::test]
async fn overrides_are_permission_denied_by_default() {
    let server = start_backend(backend_config("locked", "1ms"), 2);
    let mut client = backend_client(&server).await;
    for req in [
        FetchRequest {
            delay_ms: Some(5),
            ..fetch("q")
        },
        FetchRequest {
            fail: Some(true),
            ..fetch("q")
        },
        FetchRequest {
            mode: Some(2),
            ..fetch("q")
        },
    ] {
        let err = client.fetch(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{req:?}");
        assert!(err.message().contains("--allow-overrides"), "{err:?}");
    }
    // A plain request still works.
    client.fetch(fetch("q")).await.unwrap();
}

#[tokio::test]
async fn allowed_overrides_are_honoured_and_bounded() {
    let config = BackendConfig {
        allow_overrides: true,
        ..backend_config("open", "1ms")
    };
    let server = start_backend(config, 2);
    let mut client = backend_client(&server).await;

    let start = Instant::now();
    let reply = client
        .fetch(FetchRequest {
            delay_ms: Some(120),
            ..fetch("q")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.delay_ms, 120);
    assert!(start.elapsed() >= Duration::from_millis(120));

    let err = client
        .fetch(FetchRequest {
            fail: Some(true),
            ..fetch("q")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);

    let err = client
        .fetch(FetchRequest {
            delay_ms: Some(36_000_000),
            ..fetch("q")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message()
            .contains("delay_ms 36000000 is over the limit"),
        "{err:?}"
    );

    let err = client
        .fetch(FetchRequest {
            mode: Some(42),
            ..fetch("q")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("mode 42"), "{err:?}");

    let err = client.fetch(fetch(&"x".repeat(5000))).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("query is 5000 bytes"), "{err:?}");
}
