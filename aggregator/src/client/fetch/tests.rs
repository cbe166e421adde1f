//! Fetch alone, over a real socket to a backend of a few lines (the layer's job is the wire:
//! the message, the time left as `grpc-timeout`, and what the answer or its absence becomes).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_proto::v1::backend_server::{Backend, BackendServer};
use fanout_proto::v1::{FetchReply, FetchRequest, ServerStats, StatsRequest};
use fanout_tls::ClientTls;
use tokio::time::Instant;
use tonic::{Code, Request, Response, Status};
use tower::ServiceExt;

use super::{Fetch, Keepalive};
use crate::client::Call;
use crate::client::error::CallError;

/// Answers a query `fail:CODE` with that status code, any other with its echo; notes each
/// call's `grpc-timeout`.
#[derive(Default, Clone)]
struct Echo {
    timeouts: Arc<Mutex<Vec<Option<Duration>>>>,
}

#[tonic::async_trait]
impl Backend for Echo {
    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchReply>, Status> {
        let timeout = fanout_server::deadline::grpc_timeout(&req);
        self.timeouts.lock().unwrap().push(timeout);
        let query = req.into_inner().query;
        if let Some(code) = query.strip_prefix("fail:") {
            let code = Code::from_i32(code.parse().unwrap());
            return Err(Status::new(code, "as asked"));
        }
        Ok(Response::new(FetchReply {
            backend: "echo".into(),
            payload: query.clone(),
            query,
            ..FetchReply::default()
        }))
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<ServerStats>, Status> {
        Ok(Response::new(ServerStats::default()))
    }
}

/// An `Echo` backend on a free loopback port.
async fn echo() -> (SocketAddr, Echo) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let echo = Echo::default();
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(BackendServer::new(echo.clone()))
            .serve_with_incoming(incoming),
    );
    (addr, echo)
}

fn fetch(addr: SocketAddr) -> Fetch {
    let keepalive = Keepalive {
        interval: Duration::from_secs(5),
        timeout: Duration::from_secs(5),
    };
    Fetch::connect(
        "b".into(),
        &format!("http://{addr}"),
        None,
        keepalive,
        &ClientTls::system(),
    )
    .unwrap()
}

fn call(query: &str, deadline_in: Duration) -> Call<FetchRequest> {
    let message = FetchRequest {
        query: query.into(),
        ..FetchRequest::default()
    };
    Call::new(
        message,
        Instant::now() + deadline_in,
        Duration::from_secs(1),
    )
}

#[tokio::test]
async fn the_message_goes_out_with_the_time_left_as_grpc_timeout() {
    let (addr, echo) = echo().await;
    let reply = fetch(addr)
        .oneshot(call("weather", Duration::from_millis(800)))
        .await
        .unwrap();
    assert_eq!(
        (reply.query.as_str(), reply.payload.as_str()),
        ("weather", "weather")
    );
    let sent = echo.timeouts.lock().unwrap()[0].expect("a grpc-timeout");
    // What was left when it was sent: the deadline's 800 ms, less the time to get there.
    assert!(
        sent <= Duration::from_millis(800) && sent > Duration::from_millis(300),
        "{sent:?}"
    );
}

#[tokio::test]
async fn the_backend_s_status_is_the_call_s() {
    let (addr, _) = echo().await;
    let fetch = fetch(addr);
    let second = Duration::from_secs(1);
    let error = fetch
        .clone()
        .oneshot(call("fail:9", second))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, CallError::Status(s) if s.code() == Code::FailedPrecondition),
        "{error:?}"
    );
    assert!(!error.retryable());
    // The backend's own UNAVAILABLE (as a flaky one answers) is its answer, not a lost
    // connection, and is retried.
    let error = fetch.oneshot(call("fail:14", second)).await.unwrap_err();
    assert!(
        matches!(&error, CallError::Status(s) if s.code() == Code::Unavailable && s.message() == "as asked"),
        "{error:?}"
    );
    assert!(error.retryable());
}

#[tokio::test]
async fn no_backend_there_is_unreachable_naming_the_connect_error() {
    // A port nothing listens on: bound, then closed.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let error = fetch(addr)
        .oneshot(call("q", Duration::from_secs(1)))
        .await
        .unwrap_err();
    match &error {
        CallError::Unreachable(s) => {
            assert_eq!(s.code(), Code::Unavailable);
            assert!(s.message().contains("connect"), "{s:?}");
        }
        other => panic!("{other:?}"),
    }
}
