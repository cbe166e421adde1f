//! Servers that shrug off hostile clients: each HTTP/2 limit of a server (streams per connection,
//! header list size, keepalive, the first-request and TLS handshake timeouts) and each bad
//! message (oversized, malformed) costs the client that broke it its call or its own
//! connection, never anyone else's. Driven with a raw HTTP/2 client on the `h2` crate (and raw
//! bytes where h2 will not misbehave: a silent socket, a peer that never answers a PING);
//! another caller on another connection is served throughout. The rapid-reset guard is in
//! `stall_cancellation.rs`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use fanout_proto::v1::FetchRequest;
use fanout_server::ConnLimits;
use fanout_server::thread::ServerThread;
use fanout_tests::hostile::frame;
use fanout_tests::load::ms;
use fanout_tests::pki::Pki;
use fanout_tests::raw::{self, Ended};
use fanout_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const FETCH: &str = "/fanout.v1.Backend/Fetch";
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;

/// A backend that takes overrides (so a test can make a call slow), with these limits.
fn backend(limits: ConnLimits) -> ServerThread {
    start_backend(
        BackendConfig {
            allow_overrides: true,
            limits,
            ..backend_config("target", "0ms")
        },
        2,
    )
}

/// A Fetch of `delay_ms` on its own new connection succeeds: another caller is served.
async fn another_caller_is_served(addr: SocketAddr, delay_ms: u32) -> Duration {
    let conn = raw::connect(addr).await;
    let started = Instant::now();
    let ended = raw::call(&conn.send, raw::grpc_head(FETCH), slow(delay_ms)).await;
    assert_eq!(
        ended.code(),
        Some(0),
        "another caller was not served: {ended:?}"
    );
    started.elapsed()
}

fn slow(delay_ms: u32) -> bytes::Bytes {
    raw::encoded(&FetchRequest {
        query: "q".into(),
        delay_ms: Some(delay_ms),
        ..Default::default()
    })
}

/// Reads frames from `tcp` until it closes; returns the frame types seen, and when it closed.
async fn frames_until_closed(tcp: &mut TcpStream, limit: Duration) -> (Vec<u8>, Option<Instant>) {
    let mut types = Vec::new();
    let until = tokio::time::Instant::now() + limit;
    let mut head = [0u8; 9];
    loop {
        match tokio::time::timeout_at(until, tcp.read_exact(&mut head)).await {
            Err(_) => return (types, None),
            Ok(Err(_)) => return (types, Some(Instant::now())),
            Ok(Ok(_)) => {}
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return (types, Some(Instant::now()));
        }
        types.push(head[3]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_the_limit_wait_on_their_own_connection() {
    let server = backend(ConnLimits {
        max_concurrent_streams: 4,
        ..ConnLimits::default()
    });
    let conn = raw::connect(server.addr()).await;
    // The server told the client its limit in its SETTINGS.
    let told = eventually(Duration::from_secs(3), || async {
        conn.send.current_max_send_streams() == 4
    })
    .await;
    assert!(
        told,
        "max streams: {}",
        conn.send.current_max_send_streams()
    );

    // Four slow calls fill the connection; a fifth on it waits for one of them to end.
    let started = Instant::now();
    let slow_calls: Vec<_> = (0..4)
        .map(|_| {
            let send = conn.send.clone();
            tokio::spawn(async move { raw::call(&send, raw::grpc_head(FETCH), slow(600)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let fifth = {
        let send = conn.send.clone();
        tokio::spawn(async move {
            let ended = raw::call(&send, raw::grpc_head(FETCH), slow(0)).await;
            (ended, Instant::now())
        })
    };
    // Meanwhile a call on another connection goes straight through.
    let other = another_caller_is_served(server.addr(), 0).await;
    let (ended, fifth_done) = fifth.await.unwrap();
    assert_eq!(ended.code(), Some(0), "{ended:?}");
    let fifth_took = fifth_done - started;
    println!(
        "fifth call on the full connection: {:.0} ms after the first four; another connection's: {:.0} ms",
        ms(fifth_took),
        ms(other)
    );
    assert!(
        fifth_took >= Duration::from_millis(500),
        "the fifth stream did not wait"
    );
    assert!(other * 2 < fifth_took, "the other connection waited too");
    for c in slow_calls {
        assert_eq!(c.await.unwrap().code(), Some(0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_list_costs_only_its_call() {
    let server = backend(ConnLimits {
        max_header_list_size: 4096,
        ..ConnLimits::default()
    });
    let conn = raw::connect(server.addr()).await;
    let mut head = raw::grpc_head(FETCH);
    head.headers_mut()
        .insert("x-padding", "a".repeat(8000).parse().unwrap());
    let ended = raw::call(&conn.send, head, slow(0)).await;
    println!("oversized headers: {ended:?}");
    assert!(
        matches!(ended, Ended::Http(s) if s == http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        "{ended:?}"
    );
    // The same connection, and another, still serve.
    let again = raw::call(&conn.send, raw::grpc_head(FETCH), slow(0)).await;
    assert_eq!(again.code(), Some(0), "{again:?}");
    another_caller_is_served(server.addr(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_messages_are_refused_with_a_status() {
    let server = backend(ConnLimits::default());
    let conn = raw::connect(server.addr()).await;
    let too_big = raw::framed(&vec![0u8; fanout_proto::limits::MAX_MESSAGE_BYTES + 1]);
    let not_protobuf = raw::framed(&[0xff; 32]);
    // A frame that says "compressed" on a call that named no compression.
    let mut compressed = raw::encoded(&fanout_tests::fetch("q")).to_vec();
    compressed[0] = 1;
    for (what, body, want) in [
        // tonic's own word for a message past max_decoding_message_size.
        ("oversized", too_big, tonic::Code::OutOfRange),
        ("not protobuf", not_protobuf, tonic::Code::Internal),
        (
            "compressed without an encoding",
            compressed.into(),
            tonic::Code::Internal,
        ),
    ] {
        let ended = raw::call(&conn.send, raw::grpc_head(FETCH), body).await;
        println!("{what}: {ended:?}");
        assert_eq!(ended.code(), Some(want as i32), "{what}: {ended:?}");
    }
    let fine = raw::call(&conn.send, raw::grpc_head(FETCH), slow(0)).await;
    assert_eq!(
        fine.code(),
        Some(0),
        "the connection no longer serves: {fine:?}"
    );
    another_caller_is_served(server.addr(), 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_answers_pings_is_dropped() {
    let server = backend(ConnLimits {
        ping_interval: Duration::from_millis(300),
        ping_timeout: Duration::from_millis(300),
        // Out of the way: this connection sends no call either.
        first_request_timeout: Duration::from_secs(60),
        ..ConnLimits::default()
    });
    let mut tcp = TcpStream::connect(server.addr()).await.unwrap();
    let opened = Instant::now();
    tcp.write_all(PREFACE).await.unwrap();
    tcp.write_all(&frame(SETTINGS, 0, 0, &[])).await.unwrap();
    // Reads what the server sends, answers nothing (not its SETTINGS, not its PINGs).
    let reader =
        tokio::spawn(async move { frames_until_closed(&mut tcp, Duration::from_secs(10)).await });
    another_caller_is_served(server.addr(), 0).await;
    let (types, closed) = reader.await.unwrap();
    let closed = closed.expect("the server kept a connection that answers no ping");
    println!(
        "frames from the server: {types:?}; closed after {:.0} ms",
        ms(closed - opened)
    );
    assert!(types.contains(&PING), "no PING before the close: {types:?}");
    assert!(
        closed - opened >= Duration::from_millis(500),
        "closed before a ping could go unanswered"
    );
    assert!(closed - opened < Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_no_call_is_closed() {
    let server = backend(ConnLimits {
        first_request_timeout: Duration::from_millis(800),
        ..ConnLimits::default()
    });
    // A socket that says nothing at all...
    let mut silent = TcpStream::connect(server.addr()).await.unwrap();
    let opened = Instant::now();
    // ...an HTTP/2 client that completes its handshake and calls nothing...
    let idle = raw::connect(server.addr()).await;
    // ...and one that calls at once, and again after the timeout.
    let busy = raw::connect(server.addr()).await;
    assert_eq!(
        raw::call(&busy.send, raw::grpc_head(FETCH), slow(0))
            .await
            .code(),
        Some(0)
    );

    let (_, closed) = frames_until_closed(&mut silent, Duration::from_secs(5)).await;
    let closed = closed.expect("a silent socket was kept");
    println!("silent socket closed after {:.0} ms", ms(closed - opened));
    assert!(
        closed - opened >= Duration::from_millis(600) && closed - opened < Duration::from_secs(5)
    );
    let idle_ended = tokio::time::timeout(Duration::from_secs(5), idle.driver)
        .await
        .expect("an idle HTTP/2 connection was kept");
    println!("idle HTTP/2 connection ended: {idle_ended:?}");

    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = raw::call(&busy.send, raw::grpc_head(FETCH), slow(0)).await;
    assert_eq!(
        again.code(),
        Some(0),
        "a connection that called was closed: {again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_never_finished_is_abandoned_and_holds_no_one_up() {
    let pki = Pki::new("fanout test CA");
    let server = start_backend(
        BackendConfig {
            tls: Some(pki.server(&["localhost"], false)),
            limits: ConnLimits {
                handshake_timeout: Duration::from_millis(1500),
                ..ConnLimits::default()
            },
            ..backend_config("target", "0ms")
        },
        2,
    );
    // Sockets that never start their handshake.
    let mut stuck = Vec::new();
    for _ in 0..20 {
        stuck.push(TcpStream::connect(server.addr()).await.unwrap());
    }
    let opened = Instant::now();
    // Meanwhile a real client completes its handshake and is served.
    let tls = fanout_tls::ClientTls::load(&pki.client(false))
        .unwrap()
        .connector()
        .unwrap();
    let conn = raw::connect_tls(server.addr(), &tls, "localhost").await;
    let served = raw::call(&conn.send, raw::grpc_head(FETCH), raw::encoded(&fetch("q"))).await;
    assert_eq!(served.code(), Some(0), "{served:?}");
    assert!(
        opened.elapsed() < Duration::from_millis(1200),
        "a good client waited for the stuck ones"
    );
    for s in &mut stuck {
        let (_, closed) = frames_until_closed(s, Duration::from_secs(5)).await;
        let closed = closed.expect("a socket that never handshook was kept");
        assert!(closed - opened >= Duration::from_millis(1200));
    }
}
