//! The loadgen's gRPC calls over `h2` (`loadgen::conn`) against the real servers: answers and
//! statuses as tonic serves them, a stream's messages as they come, a client-side bound on a
//! probe, and a connection the server closes.

use std::time::{Duration, Instant};

use fanout_proto::paths;
use fanout_proto::v1::{
    AggregateEvent, AggregateRequest, FetchReply, FetchRequest, aggregate_event::Event,
};
use loadgen::conn::{Conn, Prepared};
use loadgen::deploy::{Deployment, DeploymentSpec};
use loadgen::grpc;
use tonic::Code;

fn backend() -> fanout_server::thread::ServerThread {
    let config = backend::Config {
        latency: backend::latency::LatencySpec::Fixed(Duration::from_millis(1)),
        allow_overrides: true,
        grace_period: Duration::from_secs(1),
        ..backend::Config::default()
    };
    backend::spawn(config, 1, "127.0.0.1:0".parse().unwrap()).unwrap()
}

async fn open(url: &str) -> Conn {
    Conn::open(&url.parse().unwrap(), Duration::from_secs(3), None)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_unary_call_gets_its_answer_or_the_server_s_status() {
    let server = backend();
    let conn = open(&server.url()).await;
    let second = Duration::from_secs(1);

    let reply: FetchReply = conn
        .call(
            paths::BACKEND_FETCH,
            &FetchRequest {
                query: "q".into(),
                ..Default::default()
            },
            second,
        )
        .await
        .unwrap();
    assert_eq!(reply.query, "q");

    // Failed by the service: the status comes in the trailers.
    let failed = conn
        .call::<FetchReply>(
            paths::BACKEND_FETCH,
            &FetchRequest {
                fail: Some(true),
                ..Default::default()
            },
            second,
        )
        .await
        .unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");

    // No such method: tonic answers in the headers alone (trailers-only).
    let unknown = conn
        .call::<FetchReply>("/fanout.v1.Backend/Nope", &FetchRequest::default(), second)
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unimplemented, "{unknown:?}");

    // Slower than the probe's bound: an error by the bound, not a hang.
    let started = Instant::now();
    let slow = conn
        .call::<FetchReply>(
            paths::BACKEND_FETCH,
            &FetchRequest {
                delay_ms: Some(5_000),
                ..Default::default()
            },
            Duration::from_millis(200),
        )
        .await
        .unwrap_err();
    assert_eq!(slow.code(), Code::DeadlineExceeded, "{slow:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // The connection still serves calls after all that.
    assert!(!conn.is_closed());
    let again: FetchReply = conn
        .call(paths::BACKEND_FETCH, &FetchRequest::default(), second)
        .await
        .unwrap();
    assert_eq!(again.backend, "backend");
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_stream_s_messages_arrive_one_by_one_then_its_status() {
    let deployment = Deployment::start(&DeploymentSpec {
        backends: 3,
        replicas: 1,
        latency: backend::latency::LatencySpec::Fixed(Duration::from_millis(1)),
        mode: fanout_proto::v1::Mode::Async,
        backend_workers: 1,
        fanout: Some(fanout_proto::v1::Fanout::Concurrent),
        aggregator_workers: 1,
        capacity: None,
        policies: None,
        fail_rate: 0.0,
        faults: Vec::new(),
    })
    .await
    .unwrap();
    let conn = open(&deployment.target()).await;
    let call = Prepared::new(
        paths::AGGREGATE_STREAM,
        &AggregateRequest {
            query: "q".into(),
            ..Default::default()
        },
        Some(Duration::from_secs(5)),
    );
    let (mut results, mut summaries) = (0, 0);
    conn.server_stream(&call, &tracing::Span::none(), |message| {
        match grpc::decode::<AggregateEvent>(message)?.event {
            Some(Event::Result(_)) => results += 1,
            Some(Event::Summary(s)) => {
                assert_eq!(s.ok, 3, "{s:?}");
                summaries += 1;
            }
            None => {}
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!((results, summaries), (3, 1));
    deployment.stop().await;
}

#[tokio::test]
async fn a_connection_the_server_closes_fails_its_calls_as_unavailable() {
    let server = backend();
    let conn = open(&server.url()).await;
    let call = Prepared::new(paths::BACKEND_FETCH, &FetchRequest::default(), None);
    conn.unary(&call, &tracing::Span::none()).await.unwrap();

    // A graceful shutdown: GOAWAY, then the socket closes.
    tokio::task::spawn_blocking(move || server.stop())
        .await
        .unwrap();
    let failed = conn.unary(&call, &tracing::Span::none()).await.unwrap_err();
    assert_eq!(failed.code(), Code::Unavailable, "{failed:?}");
    assert!(conn.is_closed());
}
