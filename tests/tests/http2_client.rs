//! The workspace's own HTTP/2 client (`fanout_common::http2`, under the loadgen's load and the
//! aggregator's backend calls) against a real tonic backend over loopback: many calls on one
//! connection, request bodies larger than the flow-control windows, cancellation, a server
//! that goes away, and a peer that does not speak HTTP/2.

use std::time::{Duration, Instant};

use bytes::Bytes;
use fanout_common::grpc;
use fanout_common::http2::{self, Client, Request};
use fanout_proto::paths;
use fanout_proto::v1::{FetchReply, FetchRequest};
use fanout_server::thread::ServerThread;
use fanout_tests::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tonic::{Code, Status};

async fn connect(addr: std::net::SocketAddr) -> Client {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, driver) = http2::handshake(tcp, &addr.to_string());
    tokio::spawn(driver);
    client
}

const FETCH: Request<'static> = Request {
    path: paths::BACKEND_FETCH,
    timeout: None,
    metadata: None,
};

fn body(query: &str) -> Bytes {
    grpc::frame(&FetchRequest {
        query: query.into(),
        ..Default::default()
    })
}

async fn fetch(client: &Client, query: &str) -> Result<FetchReply, Status> {
    grpc::decode(grpc::unary(client, &FETCH, &body(query)).await?)
}

fn backend(latency: &str) -> ServerThread {
    start_backend(backend_config("b", latency), 2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_calls_share_one_connection() {
    let b = backend("20ms");
    let client = connect(b.addr()).await;
    let calls: Vec<_> = (0..300)
        .map(|i| {
            let c = client.clone();
            tokio::spawn(async move { (i, fetch(&c, &format!("q{i}")).await) })
        })
        .collect();
    for call in calls {
        let (i, reply) = call.await.unwrap();
        let reply = reply.unwrap_or_else(|s| panic!("call {i}: {s:?}"));
        assert_eq!(reply.query, format!("q{i}"));
        assert_eq!(reply.backend, "b");
    }
    let stats = backend_stats(&mut backend_client(&b).await).await;
    assert_eq!(stats.served, 300, "{stats:?}");
    // With a timeout and trace-like metadata, the headers still arrive as sent.
    let mut metadata = http::HeaderMap::new();
    metadata.insert("x-test", "1".parse().unwrap());
    let req = Request {
        timeout: Some(Duration::from_secs(5)),
        metadata: Some(&metadata),
        ..FETCH
    };
    let reply: FetchReply =
        grpc::decode(grpc::unary(&client, &req, &body("t")).await.unwrap()).unwrap();
    let seen = reply
        .grpc_timeout_ms
        .expect("the backend saw a grpc-timeout");
    assert!((4_000..=5_000).contains(&seen), "{seen} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_larger_than_the_windows_arrive_whole() {
    // 24 requests of 60 KiB at once: more than the connection's window, so most bodies wait
    // for the server's WINDOW_UPDATEs, each cut into frames of at most 16 KiB. The backend
    // refuses a query over 4 KiB, naming its size: proof that every byte arrived.
    let b = backend("0ms");
    let client = connect(b.addr()).await;
    let query = "x".repeat(60 * 1024);
    let calls: Vec<_> = (0..24)
        .map(|_| {
            let c = client.clone();
            let q = query.clone();
            tokio::spawn(async move { fetch(&c, &q).await })
        })
        .collect();
    for call in calls {
        let err = call.await.unwrap().unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains("61440 bytes"), "{err:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_call_is_cancelled_at_the_server() {
    let b = backend("10s");
    let client = connect(b.addr()).await;
    let call = tokio::spawn({
        let c = client.clone();
        async move { fetch(&c, "slow").await }
    });
    let mut stats_client = backend_client(&b).await;
    let started = eventually(Duration::from_secs(5), || {
        let mut s = stats_client.clone();
        async move { backend_stats(&mut s).await.in_flight == 1 }
    })
    .await;
    assert!(started, "the call never reached the backend");
    call.abort();
    let cancelled = eventually(Duration::from_secs(5), || {
        let mut s = stats_client.clone();
        async move { backend_stats(&mut s).await.cancelled == 1 }
    })
    .await;
    assert!(cancelled, "{:?}", backend_stats(&mut stats_client).await);
    // The connection still carries calls: one bounded by 100 ms is answered by the backend's
    // server (tonic answers an expired grpc-timeout with CANCELLED, "Timeout expired").
    let req = Request {
        timeout: Some(Duration::from_millis(100)),
        ..FETCH
    };
    let err = grpc::unary(&client, &req, &body("after"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Cancelled, "{err:?}");
    assert_eq!(err.message(), "Timeout expired", "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_goes_away_fails_calls_as_unavailable() {
    let b = backend("0ms");
    let client = connect(b.addr()).await;
    fetch(&client, "before").await.unwrap();
    drop(b);
    let closed = eventually(Duration::from_secs(10), || {
        let c = client.clone();
        async move { c.is_closed() }
    })
    .await;
    assert!(closed, "the client never noticed the server leave");
    let err = fetch(&client, "after").await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().starts_with("connection failed"), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_does_not_speak_http2_is_an_error_not_a_hang() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let _ = socket
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    });
    let client = connect(addr).await;
    let start = Instant::now();
    let err = fetch(&client, "q").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(5));
    assert_eq!(err.code(), Code::Unavailable, "{err:?}");
    assert!(err.message().contains("HTTP/2"), "{err:?}");
}
