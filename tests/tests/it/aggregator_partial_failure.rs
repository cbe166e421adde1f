//! A failing or dead backend is that backend's `failure`; the others' results still arrive and
//! the call itself succeeds.

use fanout_proto::v1::backend_result::Outcome;
use fanout_tests::*;

#[tokio::test]
async fn failing_and_dead_backends_do_not_fail_the_call() {
    let ok = start_backend(backend_config("ok", "10ms"), 2);
    let flaky = start_backend(
        BackendConfig {
            fail_rate: 1.0,
            ..backend_config("broken", "10ms")
        },
        2,
    );
    let config = aggregator_config(vec![
        spec("ok", &ok),
        spec("broken", &flaky),
        dead_spec("dead"),
    ]);
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;

    let reply = client
        .aggregate(aggregate("q"))
        .await
        .expect("call succeeds")
        .into_inner();
    let summary = reply.summary.unwrap();
    assert_eq!(
        (summary.ok, summary.failed, summary.timed_out),
        (1, 2, 0),
        "{reply:?}"
    );
    assert_eq!(reply.results.len(), 3);
    for r in &reply.results {
        match (r.backend.as_str(), &r.outcome) {
            ("ok", Some(Outcome::Reply(reply))) => assert_eq!(reply.backend, "ok"),
            ("broken", Some(Outcome::Failure(f))) => {
                assert_eq!(f.code_name, "UNAVAILABLE");
                assert!(f.message.contains("simulated failure"), "{f:?}");
                assert_eq!(r.attempts, 3, "UNAVAILABLE is retried up to --max-attempts");
            }
            ("dead", Some(Outcome::Failure(f))) => {
                assert_eq!(f.code_name, "UNAVAILABLE");
                assert!(f.message.starts_with("backend dead:"), "{f:?}");
            }
            other => panic!("unexpected result {other:?}"),
        }
    }
}
