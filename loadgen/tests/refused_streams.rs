//! Which failures of a call the loadgen sends again (gRFC A6's transparent retries), against a
//! scripted HTTP/2 server that writes its frames by hand: only a stream the server provably
//! never processed, refused (RST_STREAM REFUSED_STREAM) before any answer, and only so many
//! times. A reset after the answer's headers, a CANCEL or an INTERNAL_ERROR, is the call's
//! outcome; a stream above a GOAWAY's last stream id is never processed either, but this
//! connection cannot take it again.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_proto::paths;
use fanout_proto::v1::FetchRequest;
use loadgen::conn::{Conn, MAX_ATTEMPTS, Prepared};
use tonic::Code;

const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;
const INTERNAL_ERROR: u32 = 0x2;

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = len.to_be_bytes()[1..].to_vec();
    f.extend([kind, flags]);
    f.extend(stream.to_be_bytes());
    f.extend(payload);
    f
}

/// The answer's headers: `:status 200` (static table entry 8) and `content-type:
/// application/grpc` (a literal with the static table's name 31), in HPACK.
fn headers(stream: u32) -> Vec<u8> {
    let mut block = vec![0x88, 0x0f, 0x10, 16];
    block.extend(b"application/grpc");
    frame(0x1, 0x4, stream, &block)
}

/// A whole successful answer: headers, one empty message, `grpc-status: 0` trailers.
fn answer(stream: u32) -> Vec<u8> {
    let mut trailers = vec![0x00, 11];
    trailers.extend(b"grpc-status");
    trailers.extend([1, b'0']);
    let mut all = headers(stream);
    all.extend(frame(0x0, 0, stream, &[0, 0, 0, 0, 0]));
    all.extend(frame(0x1, 0x5, stream, &trailers));
    all
}

fn reset(stream: u32, code: u32) -> Vec<u8> {
    frame(0x3, 0, stream, &code.to_be_bytes())
}

fn go_away(last_stream: u32) -> Vec<u8> {
    let mut payload = last_stream.to_be_bytes().to_vec();
    payload.extend(0u32.to_be_bytes()); // NO_ERROR
    frame(0x7, 0, 0, &payload)
}

/// A server on one connection: for the `k`th stream the client opens (its id, and the ids of
/// all so far), `script` says what to write. Returns its URL and the ids of the streams it was
/// sent.
fn server(
    script: impl Fn(usize, u32, &[u32]) -> Vec<u8> + Send + 'static,
) -> (String, Arc<Mutex<Vec<u32>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let streams = Arc::new(Mutex::new(Vec::new()));
    let seen = streams.clone();
    std::thread::spawn(move || {
        let (mut socket, _) = listener.accept().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let mut preface = [0; 24];
        socket.read_exact(&mut preface).unwrap();
        assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
        socket.write_all(&frame(0x4, 0, 0, &[])).unwrap();
        while let Some((kind, flags, stream)) = read_frame(&mut socket) {
            match kind {
                // SETTINGS, not an ACK: acknowledged.
                0x4 if flags & 0x1 == 0 => socket.write_all(&frame(0x4, 0x1, 0, &[])).unwrap(),
                // HEADERS: a new call.
                0x1 => {
                    let mut s = seen.lock().unwrap();
                    s.push(stream);
                    let out = script(s.len() - 1, stream, &s);
                    drop(s);
                    socket.write_all(&out).unwrap();
                }
                _ => {}
            }
        }
    });
    (url, streams)
}

/// The next frame's type, flags and stream; `None` once the client has gone.
fn read_frame(socket: &mut TcpStream) -> Option<(u8, u8, u32)> {
    let mut head = [0; 9];
    socket.read_exact(&mut head).ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    socket.read_exact(&mut payload).ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some((head[3], head[4], stream))
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
async fn call(script: impl Fn(usize, u32, &[u32]) -> Vec<u8> + Send + 'static) -> (Code, usize) {
    let (url, streams) = server(script);
    let conn = open(&url).await;
    let code = match conn.unary(&fetch(), &tracing::Span::none()).await {
        Ok(_) => Code::Ok,
        Err(s) => s.code(),
    };
    let n = streams.lock().unwrap().len();
    (code, n)
}

#[tokio::test]
async fn a_refused_stream_is_sent_again_and_counts_as_one_call() {
    let (code, streams) = call(|k, id, _| match k {
        0 | 1 => reset(id, REFUSED_STREAM),
        _ => answer(id),
    })
    .await;
    assert_eq!((code, streams), (Code::Ok, 3));
}

#[tokio::test]
async fn a_server_refusing_everything_gets_so_many_tries_then_unavailable() {
    let started = std::time::Instant::now();
    let (code, streams) = call(|_, id, _| reset(id, REFUSED_STREAM)).await;
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
    let (code, streams) = call(|_, id, _| {
        let mut out = headers(id);
        out.extend(reset(id, REFUSED_STREAM));
        out
    })
    .await;
    assert_eq!((code, streams), (Code::Unavailable, 1));
}

#[tokio::test]
async fn other_resets_are_the_call_s_outcome_not_sent_again() {
    for (reason, want) in [(CANCEL, Code::Cancelled), (INTERNAL_ERROR, Code::Internal)] {
        let (code, streams) = call(move |_, id, _| reset(id, reason)).await;
        assert_eq!((code, streams), (want, 1), "reset {reason:#x}");
    }
}

#[tokio::test]
async fn a_stream_above_a_goaway_s_last_stream_id_fails_but_those_below_finish() {
    // The first stream is held until the second arrives; then GOAWAY with the first as the
    // last stream processed, and the first's answer.
    let (url, streams) = server(|k, _, ids| match k {
        0 => Vec::new(),
        1 => {
            let mut out = go_away(ids[0]);
            out.extend(answer(ids[0]));
            out
        }
        _ => panic!("a third stream, after the GOAWAY"),
    });
    let conn = open(&url).await;
    let (first, second) = (fetch(), fetch());
    let span = tracing::Span::none();
    let first = conn.unary(&first, &span);
    let second = async {
        // Sent once the first is on its way.
        tokio::time::sleep(Duration::from_millis(50)).await;
        conn.unary(&second, &span).await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first.is_ok(), "{first:?}");
    let second = second.unwrap_err();
    assert_eq!(second.code(), Code::Unavailable, "{second:?}");
    // Not sent again here: the connection is closing.
    assert!(conn.is_closed());
    assert_eq!(streams.lock().unwrap().len(), 2);
    let after = conn.unary(&fetch(), &span).await.unwrap_err();
    assert_eq!(after.code(), Code::Unavailable, "{after:?}");
    assert_eq!(streams.lock().unwrap().len(), 2);
}
