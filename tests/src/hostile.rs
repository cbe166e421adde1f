//! Backends that misbehave at the HTTP/2 level, each a few raw frames written on a TCP listener:
//! what a buggy or hostile peer sends, which no well-behaved server (tonic, grpcio) would. They
//! prove the aggregator's client stack (tonic over h2) keeps its calls and its memory bounded.
//!
//! A frame is a 9-byte head (24-bit length, type, flags, 31-bit stream id) and its payload.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const HEADERS: u8 = 0x1;
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
/// GOAWAY's error code for a peer that should calm down.
const ENHANCE_YOUR_CALM: u32 = 0xb;
/// What every HTTP/2 client sends first.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const CONTINUATION: u8 = 0x9;

/// One frame, head and payload.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&len.to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// What a hostile backend does on each connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehaviour {
    /// Sends its SETTINGS, then PING frames as fast as the client takes them, and never reads a
    /// byte: every PING asks for an ACK the client cannot deliver.
    PingFlood,
    /// Reads the client's first request, then answers it with a HEADERS frame that never ends:
    /// empty CONTINUATION frames, forever.
    EndlessContinuation,
    /// Answers like an HTTP/1.1 server and hangs up: a backend URL pointing at the wrong thing.
    Http1,
    /// Answers no call, and the first PING on each connection with GOAWAY `ENHANCE_YOUR_CALM`
    /// "too_many_pings", as a grpcio server does to a client that pings more often than it
    /// allows; notes how long into each connection that PING came.
    PolicesPings,
}

/// A listener running a [`Misbehaviour`] on every connection; stops when dropped.
pub struct HostileBackend {
    pub addr: String,
    /// Bytes written to clients so far.
    pub written: Arc<AtomicU64>,
    /// [`Misbehaviour::PolicesPings`]: per connection, in order, when its first PING came.
    pub first_pings: Arc<Mutex<Vec<Duration>>>,
    task: JoinHandle<()>,
}

impl HostileBackend {
    pub async fn start(how: Misbehaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address").to_string();
        let written = Arc::new(AtomicU64::new(0));
        let first_pings = Arc::new(Mutex::new(Vec::new()));
        let (count, pings) = (written.clone(), first_pings.clone());
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((socket, _)) = listener.accept().await {
                if how == Misbehaviour::PolicesPings {
                    conns.spawn(police_pings(socket, pings.clone()));
                } else {
                    conns.spawn(serve(socket, how, count.clone()));
                }
            }
        });
        HostileBackend {
            addr,
            written,
            first_pings,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn written_mib(&self) -> f64 {
        self.written.load(Ordering::Relaxed) as f64 / (1 << 20) as f64
    }
}

impl Drop for HostileBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// At most this much per connection, so a test's flood ends by itself.
const FLOOD_LIMIT: u64 = 256 << 20;

async fn serve(mut socket: TcpStream, how: Misbehaviour, written: Arc<AtomicU64>) {
    let send = async |bytes: &[u8], socket: &mut TcpStream| {
        // A client that stopped reading leaves the write pending: give up after a while.
        match tokio::time::timeout(Duration::from_secs(5), socket.write_all(bytes)).await {
            Ok(Ok(())) => {
                written.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                true
            }
            _ => false,
        }
    };
    match how {
        Misbehaviour::PingFlood => {
            if !send(&frame(SETTINGS, 0, 0, &[]), &mut socket).await {
                return;
            }
            // 512 PINGs per write.
            let burst: Vec<u8> = (0..512u64)
                .flat_map(|i| frame(PING, 0, 0, &i.to_be_bytes()))
                .collect();
            let mut sent = 0;
            while sent < FLOOD_LIMIT && send(&burst, &mut socket).await {
                sent += burst.len() as u64;
            }
            // Hold the connection open, still not reading, until the client gives up on it.
            let mut sink = [0u8; 1];
            let _ = tokio::time::timeout(Duration::from_secs(30), socket.peek(&mut sink)).await;
        }
        Misbehaviour::EndlessContinuation => {
            // The client's preface, SETTINGS and first request arrive together.
            let mut buf = vec![0u8; 64 * 1024];
            if !matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {
                return;
            }
            // A response HEADERS on stream 1 (the first request's), without END_HEADERS: its
            // block holds one byte, the static table's `:status: 200`.
            let mut head = frame(SETTINGS, 0, 0, &[]);
            head.extend(frame(HEADERS, 0, 1, &[0x88]));
            if !send(&head, &mut socket).await {
                return;
            }
            let burst: Vec<u8> = (0..512)
                .flat_map(|_| frame(CONTINUATION, 0, 1, &[]))
                .collect();
            let mut sent = 0;
            while sent < FLOOD_LIMIT && send(&burst, &mut socket).await {
                sent += burst.len() as u64;
                // Drain what the client says (its GOAWAY), so only our side floods.
                let _ = tokio::time::timeout(Duration::from_millis(1), socket.read(&mut buf)).await;
            }
        }
        Misbehaviour::PolicesPings => unreachable!("served by police_pings"),
        Misbehaviour::Http1 => {
            let mut buf = vec![0u8; 4096];
            let _ = socket.read(&mut buf).await;
            let _ = send(
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                &mut socket,
            )
            .await;
        }
    }
}

/// [`Misbehaviour::PolicesPings`] on one connection.
async fn police_pings(mut socket: TcpStream, first_pings: Arc<Mutex<Vec<Duration>>>) {
    let accepted = Instant::now();
    let mut preface = [0u8; PREFACE.len()];
    if socket.read_exact(&mut preface).await.is_err() || preface != PREFACE {
        return;
    }
    if socket.write_all(&frame(SETTINGS, 0, 0, &[])).await.is_err() {
        return;
    }
    loop {
        let mut head = [0u8; 9];
        if socket.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0u8; len];
        if socket.read_exact(&mut payload).await.is_err() {
            return;
        }
        let (kind, flags) = (head[3], head[4]);
        if kind == SETTINGS && flags & ACK == 0 {
            let _ = socket.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
        }
        if kind == PING && flags & ACK == 0 {
            first_pings.lock().unwrap().push(accepted.elapsed());
            // Last stream 0: no call on this connection was taken, so the client may retry them.
            let mut goaway = 0u32.to_be_bytes().to_vec();
            goaway.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
            goaway.extend_from_slice(b"too_many_pings");
            let _ = socket.write_all(&frame(GOAWAY, 0, 0, &goaway)).await;
            return;
        }
    }
}
