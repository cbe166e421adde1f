//! Bad requests get INVALID_ARGUMENT (or PERMISSION_DENIED for overrides) naming the problem,
//! and the aggregator keeps serving.

use fanout_proto::v1::AggregateRequest;
use fanout_tests::*;
use tonic::Code;

#[tokio::test]
async fn each_bad_request_names_its_problem() {
    let b = start_backend(backend_config("b", "1ms"), 2);
    let c = start_backend(backend_config("c", "1ms"), 2);
    let agg = start_aggregator(aggregator_config(vec![spec("b", &b), spec("c", &c)]), 2);
    let mut client = aggregator_client(&agg).await;
    let r = || aggregate("q");
    let cases: Vec<(AggregateRequest, Code, &str)> = vec![
        (
            AggregateRequest {
                backends: vec!["zeta".into()],
                ..r()
            },
            Code::InvalidArgument,
            "unknown backend `zeta`",
        ),
        (
            AggregateRequest {
                backends: vec!["b".into(), "b".into()],
                ..r()
            },
            Code::InvalidArgument,
            "listed twice",
        ),
        (
            AggregateRequest {
                backends: vec!["b".into(), "c".into(), "d".into()],
                ..r()
            },
            Code::InvalidArgument,
            "3 backends asked for",
        ),
        (
            AggregateRequest {
                deadline_ms: Some(0),
                ..r()
            },
            Code::InvalidArgument,
            "deadline_ms 0",
        ),
        (
            AggregateRequest {
                deadline_ms: Some(3),
                ..r()
            },
            Code::InvalidArgument,
            "below the 5 ms minimum",
        ),
        (
            AggregateRequest {
                attempt_timeout_ms: Some(0),
                ..r()
            },
            Code::InvalidArgument,
            "attempt_timeout_ms 0",
        ),
        (
            AggregateRequest {
                deadline_ms: Some(86_400_000),
                ..r()
            },
            Code::InvalidArgument,
            "over the limit",
        ),
        (
            AggregateRequest {
                query: "x".repeat(4097),
                ..r()
            },
            Code::InvalidArgument,
            "query is 4097 bytes",
        ),
        (
            AggregateRequest {
                fanout: Some(2),
                ..r()
            },
            Code::PermissionDenied,
            "--allow-overrides",
        ),
        (
            AggregateRequest {
                mode: Some(2),
                ..r()
            },
            Code::PermissionDenied,
            "--allow-overrides",
        ),
        (
            AggregateRequest {
                delay_ms: Some(5),
                ..r()
            },
            Code::PermissionDenied,
            "--allow-overrides",
        ),
    ];
    for (req, code, want) in cases {
        let err = client.aggregate(req.clone()).await.unwrap_err();
        assert_eq!(err.code(), code, "{req:?}: {err:?}");
        assert!(err.message().contains(want), "{want}: {}", err.message());
    }
    // A message over the size limit is refused without harm.
    let err = client
        .aggregate(aggregate(&"x".repeat(200_000)))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok);
    // And the aggregator still serves.
    let reply = client.aggregate(r()).await.unwrap().into_inner();
    assert_eq!(reply.summary.unwrap().ok, 2);
}
