//! Which failures of a call the loadgen sends again (gRFC A6's transparent retries), against a
//! scripted server on the `h2` crate: only a stream the server provably never processed, refused
//! (RST_STREAM REFUSED_STREAM) before any answer, and only so many times. A reset after the
//! answer's headers, a CANCEL or an INTERNAL_ERROR, is the call's outcome. (A stream above a
//! GOAWAY's last stream id is tested against a real grpcio server in grpcio.rs.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use fanout_proto::paths;
use fanout_proto::v1::FetchRequest;
use h2::Reason;
use http::{HeaderMap, Response};
use loadgen::conn::{Conn, MAX_ATTEMPTS, Prepared};
use tokio::net::TcpListener;
use tonic::Code;

/// What the server does with one stream.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Resets it before any answer.
    Reset(Reason),
    /// Answers it: headers, one empty message, `grpc-status: 0`.
    Answer,
    /// Sends the answer's headers, then resets it.
    HeadersThenReset(Reason),
}

/// A server on one connection: for the `k`th stream the client opens, `script` says what to do.
/// Returns its URL and how many streams it was sent.
async fn server(script: impl Fn(usize) -> Act + Send + 'static) -> (String, Arc<Mutex<usize>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let streams = Arc::new(Mutex::new(0));
    let seen = streams.clone();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        let mut conn = h2::server::handshake(socket).await.unwrap();
        while let Some(Ok((_, mut respond))) = conn.accept().await {
            let k = {
                let mut n = seen.lock().unwrap();
                *n += 1;
                *n - 1
            };
            let headers = || {
                Response::builder()
                    .header("content-type", "application/grpc")
                    .body(())
                    .unwrap()
            };
            match script(k) {
                Act::Reset(reason) => respond.send_reset(reason),
                Act::Answer => {
                    let mut send = respond.send_response(headers(), false).unwrap();
                    send.send_data(Bytes::from_static(&[0; 5]), false).unwrap();
                    let mut trailers = HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    send.send_trailers(trailers).unwrap();
                }
                Act::HeadersThenReset(reason) => {
                    let mut send = respond.send_response(headers(), false).unwrap();
                    // Once the headers have left (h2 drops a reset stream's queued frames).
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        send.send_reset(reason);
                    });
                }
            }
        }
    });
    (url, streams)
}

async fn open(url: &str) -> Conn {
    Conn::open(&url.parse().unwrap(), Duration::from_secs(3), None)
        .await
        .unwrap()
}

fn fetch() -> Prepared {
    Prepared::new(paths::BACKEND_FETCH, &FetchRequest::default(), None)
}

/// One call's status over a new connection to a server running `script`, and the streams the
/// server was sent.
async fn call(script: impl Fn(usize) -> Act + Send + 'static) -> (Code, usize) {
    let (url, streams) = server(script).await;
    let conn = open(&url).await;
    let code = match conn.unary(&fetch(), &tracing::Span::none()).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    let n = *streams.lock().unwrap();
    (code, n)
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_and_counts_as_one_call() {
    let (code, streams) = call(|k| match k {
        0 | 1 => Act::Reset(Reason::REFUSED_STREAM),
        _ => Act::Answer,
    })
    .await;
    assert_eq!((code, streams), (Code::Ok, 3));
}

#[tokio::test]
async fn a_server_refusing_everything_gets_so_many_tries_then_unavailable() {
    let started = std::time::Instant::now();
    let (code, streams) = call(|_| Act::Reset(Reason::REFUSED_STREAM)).await;
    assert_eq!((code, streams), (Code::Unavailable, MAX_ATTEMPTS as usize));
    // The pauses between the tries add up to a quarter of a second at most.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_refusal_after_the_answer_began_is_not_sent_again() {
    let (code, streams) = call(|_| Act::HeadersThenReset(Reason::REFUSED_STREAM)).await;
    assert_eq!((code, streams), (Code::Unavailable, 1));
}

#[tokio::test]
async fn other_resets_are_the_call_s_outcome_not_sent_again() {
    for (reason, want) in [
        (Reason::CANCEL, Code::Cancelled),
        (Reason::INTERNAL_ERROR, Code::Internal),
    ] {
        let (code, streams) = call(move |_| Act::Reset(reason)).await;
        assert_eq!((code, streams), (want, 1), "reset {reason:?}");
    }
}
