//! Every `--mode` answers with the right reply, and a request's `mode` override is honoured.

use fanout_proto::v1::{FetchRequest, Mode};
use fanout_tests::*;

#[tokio::test]
async fn each_mode_returns_a_reply_that_says_how_it_waited() {
    for mode in [Mode::Async, Mode::Blocking, Mode::SpawnBlocking, Mode::Cpu] {
        let config = BackendConfig {
            mode,
            ..backend_config("alpha", "10ms")
        };
        let server = start_backend(config, 2);
        let mut client = backend_client(&server).await;
        let reply = client.fetch(fetch("weather")).await.unwrap().into_inner();
        assert_eq!(reply.backend, "alpha");
        assert_eq!(reply.query, "weather");
        assert!(reply.payload.contains("weather"), "{}", reply.payload);
        assert_eq!(reply.delay_ms, 10);
        assert_eq!(reply.mode(), mode, "{mode:?}");
    }
}

#[tokio::test]
async fn a_mode_override_changes_how_one_call_waits() {
    let config = BackendConfig {
        allow_overrides: true,
        ..backend_config("alpha", "1ms")
    };
    let server = start_backend(config, 2);
    let mut client = backend_client(&server).await;
    let req = FetchRequest {
        mode: Some(Mode::Cpu.into()),
        delay_ms: Some(5),
        ..fetch("q")
    };
    let reply = client.fetch(req).await.unwrap().into_inner();
    assert_eq!((reply.mode(), reply.delay_ms), (Mode::Cpu, 5));
}

#[tokio::test]
async fn replies_carry_x_process_time_and_the_callers_deadline() {
    let server = start_backend(backend_config("alpha", "20ms"), 2);
    let mut client = backend_client(&server).await;
    let mut req = tonic::Request::new(fetch("q"));
    req.set_timeout(std::time::Duration::from_secs(3));
    let res = client.fetch(req).await.unwrap();
    let header = res
        .metadata()
        .get("x-process-time")
        .expect("x-process-time header");
    let ms: f64 = header
        .to_str()
        .unwrap()
        .trim_end_matches("ms")
        .parse()
        .unwrap();
    assert!(ms >= 20.0, "x-process-time {ms} below the 20 ms latency");
    let seen = res.into_inner().grpc_timeout_ms.expect("grpc_timeout_ms");
    assert!(
        (2_000..=3_000).contains(&seen),
        "backend saw a {seen} ms deadline"
    );
}
