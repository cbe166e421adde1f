//! The client end of one HTTP/2 connection (RFC 9113), as gRPC uses it: a request is one
//! HEADERS frame and its message in DATA; the answer is a HEADERS frame, DATA and trailers.
//!
//! [`handshake`] gives a [`Client`], cloned by every caller, and a [`Driver`], the future that
//! reads and writes the socket (spawn it, or poll it beside the callers as the loadgen does).
//! They share one state behind a mutex. A caller that starts a call encodes its frames into
//! the shared output buffer and wakes the driver if it is idle; the driver writes whatever
//! has gathered by the time it runs, so concurrent calls leave in one write. The driver reads,
//! decodes every frame that arrived under one lock, and wakes the callers whose streams moved.
//!
//! What it does of the protocol: the connection preface and SETTINGS both ways, HPACK
//! ([`super::hpack`]), CONTINUATION, padding, flow control both ways (our windows are large and
//! given back as data arrives; the peer's are obeyed, with bodies held until it opens them),
//! the peer's stream limit (callers wait for a free stream), PING both ways, GOAWAY (calls it
//! refused fail as UNAVAILABLE, the rest finish), RST_STREAM both ways (dropping a call resets
//! its stream, so the server sees it cancelled). Anything the peer gets wrong ends the
//! connection with a GOAWAY naming the error. What it leaves out: server push (disabled in
//! our SETTINGS), priorities (ignored), TLS.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::{BuildHasherDefault, Hasher};
use std::pin::Pin;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use tokio::io::AsyncWrite;
use tokio::net::TcpStream;
use tonic::{Code, Status};

use super::hpack::{self, Kind};

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

// Frame types.
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const PUSH_PROMISE: u8 = 0x5;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const WINDOW_UPDATE: u8 = 0x8;
const CONTINUATION: u8 = 0x9;

// Flags.
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

// Error codes.
const PROTOCOL_ERROR: u32 = 0x1;
const FLOW_CONTROL_ERROR: u32 = 0x3;
const FRAME_SIZE_ERROR: u32 = 0x6;
const CANCEL: u32 = 0x8;
const COMPRESSION_ERROR: u32 = 0x9;

// Settings.
const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
const SETTINGS_ENABLE_PUSH: u16 = 0x2;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;

/// The largest frame payload this end accepts (the protocol's default, which we keep).
const MAX_FRAME: usize = 16_384;
/// The largest header block accepted (a CONTINUATION flood ends the connection).
const MAX_HEADER_BLOCK: usize = 1 << 20;
/// Our receive window per stream (SETTINGS_INITIAL_WINDOW_SIZE) and per connection. Data is
/// taken off the socket as it arrives and the window given back at half: callers read their
/// answers as they come, so a stream holds at most what arrived between two of its reads.
const STREAM_WINDOW: u32 = 1 << 24;
const CONNECTION_WINDOW: u32 = 1 << 26;
/// The protocol's initial windows, before SETTINGS and WINDOW_UPDATE change them.
const DEFAULT_WINDOW: u32 = 65_535;
const MAX_WINDOW: i64 = (1 << 31) - 1;

/// The name of an HTTP/2 error code, for messages.
pub fn reason_name(code: u32) -> String {
    let name = match code {
        0x0 => "NO_ERROR",
        0x1 => "PROTOCOL_ERROR",
        0x2 => "INTERNAL_ERROR",
        0x3 => "FLOW_CONTROL_ERROR",
        0x4 => "SETTINGS_TIMEOUT",
        0x5 => "STREAM_CLOSED",
        0x6 => "FRAME_SIZE_ERROR",
        0x7 => "REFUSED_STREAM",
        0x8 => "CANCEL",
        0x9 => "COMPRESSION_ERROR",
        0xa => "CONNECT_ERROR",
        0xb => "ENHANCE_YOUR_CALM",
        0xc => "INADEQUATE_SECURITY",
        0xd => "HTTP_1_1_REQUIRED",
        _ => return format!("error code {code:#x}"),
    };
    name.to_owned()
}

/// The gRPC status of a stream the server reset (the gRPC over HTTP/2 spec's mapping).
fn reset_status(code: u32) -> Status {
    let grpc = match code {
        0x7 => Code::Unavailable,
        0x8 => Code::Cancelled,
        0xb => Code::ResourceExhausted,
        0xc => Code::PermissionDenied,
        _ => Code::Internal,
    };
    Status::new(
        grpc,
        format!("the server reset the call ({})", reason_name(code)),
    )
}

/// The gRPC code for an HTTP status other than 200 (the gRPC over HTTP/2 spec's mapping).
pub fn http_status(status: u16) -> Status {
    let code = match status {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status}"))
}

/// A connection that failed or closed: the status of every call it ends or refuses.
fn connection_status(why: &str) -> Status {
    Status::unavailable(format!("connection failed: {why}"))
}

/// What a request says besides its message.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The method's path, e.g. `/fanout.v1.Backend/Fetch`.
    pub path: &'a str,
    /// Sent as `grpc-timeout`.
    pub timeout: Option<Duration>,
    /// More headers (trace context), sent as literals.
    pub metadata: Option<&'a HeaderMap>,
}

/// A stream id -> stream map's hasher: ids are small odd numbers, one multiply spreads them.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

#[derive(Debug, Default)]
struct Stream {
    /// The answer's head has arrived.
    head: bool,
    /// Answer bytes not yet taken by the caller.
    data: Vec<Bytes>,
    /// How the call ended, until the caller takes it.
    end: Option<Result<(), Status>>,
    /// Closed on the wire: the peer ended or reset it, we reset it, or the connection ended.
    closed: bool,
    waker: Option<Waker>,
    /// What the peer lets us send on it.
    send_window: i64,
    /// The request body not yet sent; `None` once END_STREAM is out.
    body: Option<Bytes>,
    /// Bytes received on it since its window was last given back.
    unacked: u32,
}

/// A protocol error of the peer: the connection ends with a GOAWAY of this code.
#[derive(Debug)]
struct ConnError {
    code: u32,
    what: String,
}

fn protocol(what: impl Into<String>) -> ConnError {
    ConnError {
        code: PROTOCOL_ERROR,
        what: what.into(),
    }
}

/// A header block being received (HEADERS, then CONTINUATIONs).
#[derive(Debug)]
struct Block {
    stream: u32,
    end_stream: bool,
    bytes: BytesMut,
}

#[derive(Debug)]
struct State {
    /// Frames waiting for the driver to write them.
    out: BytesMut,
    /// The driver's waker: woken when `out` gets bytes while the driver is idle.
    driver: Option<Waker>,
    encoder: hpack::Encoder,
    decoder: hpack::Decoder,
    /// A header block being encoded.
    scratch: BytesMut,
    authority: Bytes,
    next_id: u32,
    streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    /// Streams open on the wire.
    active: usize,
    /// Callers waiting for the peer's stream limit to let them open one.
    waiting: Vec<Waker>,
    /// Streams whose bodies wait for flow-control window.
    blocked: VecDeque<u32>,
    // The peer's settings.
    got_settings: bool,
    max_concurrent: usize,
    initial_window: i64,
    max_frame: usize,
    /// What the peer lets us send on the connection.
    send_window: i64,
    /// Bytes received on the connection since its window was last given back.
    recv_unacked: u32,
    block: Option<Block>,
    pings_sent: u64,
    pings_acked: u64,
    ping_waker: Option<Waker>,
    /// Why the connection ended; calls fail with it from then on.
    ended: Option<String>,
    /// Why the peer is closing the connection (GOAWAY): no new calls; the rest finish.
    going_away: Option<String>,
    /// Callers to wake once the lock is released.
    wake: Vec<Waker>,
}

fn frame_head(out: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    out.put_uint(len as u64, 3);
    out.put_u8(kind);
    out.put_u8(flags);
    out.put_u32(stream);
}

/// Sends as much of `s`'s body as the windows allow; true when it is all out.
fn send_body(
    out: &mut BytesMut,
    conn_window: &mut i64,
    max_frame: usize,
    id: u32,
    s: &mut Stream,
) -> bool {
    while let Some(body) = &mut s.body {
        let room = (*conn_window).min(s.send_window).max(0) as usize;
        let n = body.len().min(room).min(max_frame);
        if n == 0 && !body.is_empty() {
            return false;
        }
        let last = n == body.len();
        frame_head(out, n, DATA, if last { END_STREAM } else { 0 }, id);
        out.put_slice(&body[..n]);
        body.advance(n);
        *conn_window -= n as i64;
        s.send_window -= n as i64;
        if last {
            s.body = None;
        }
    }
    true
}

/// The fields of a response head or trailers that a gRPC client reads.
#[derive(Default)]
struct Fields {
    status: Option<u16>,
    grpc_status: Option<i32>,
    message: Option<Bytes>,
    details: Option<Bytes>,
}

impl Fields {
    fn grpc_result(&self) -> Option<Result<(), Status>> {
        let code = self.grpc_status?;
        if code == 0 {
            return Some(Ok(()));
        }
        // The error path: let tonic read the status as it would (percent-decoding, details).
        let mut map = HeaderMap::new();
        map.insert("grpc-status", code.into());
        if let Some(m) = self
            .message
            .as_ref()
            .and_then(|m| HeaderValue::from_bytes(m).ok())
        {
            map.insert("grpc-message", m);
        }
        if let Some(d) = self
            .details
            .as_ref()
            .and_then(|d| HeaderValue::from_bytes(d).ok())
        {
            map.insert("grpc-status-details-bin", d);
        }
        Some(Err(Status::from_header_map(&map).unwrap_or_else(|| {
            Status::new(Code::from(code), "unreadable grpc-message")
        })))
    }
}

impl State {
    fn new(authority: &str) -> Self {
        State {
            out: BytesMut::with_capacity(16 * 1024),
            driver: None,
            encoder: hpack::Encoder::default(),
            decoder: hpack::Decoder::default(),
            scratch: BytesMut::new(),
            authority: Bytes::copy_from_slice(authority.as_bytes()),
            next_id: 1,
            streams: HashMap::default(),
            active: 0,
            waiting: Vec::new(),
            blocked: VecDeque::new(),
            got_settings: false,
            max_concurrent: usize::MAX,
            initial_window: i64::from(DEFAULT_WINDOW),
            max_frame: MAX_FRAME,
            send_window: i64::from(DEFAULT_WINDOW),
            recv_unacked: 0,
            block: None,
            pings_sent: 0,
            pings_acked: 0,
            ping_waker: None,
            ended: None,
            going_away: None,
            wake: Vec::new(),
        }
    }

    fn is_closed(&self) -> bool {
        self.ended.is_some() || self.going_away.is_some()
    }

    /// Why no new call can start here, if one cannot.
    fn refusal(&self) -> Option<Status> {
        let why = self.ended.as_ref().or(self.going_away.as_ref())?;
        Some(connection_status(why))
    }

    /// Encodes a request's frames into `out` and opens its stream.
    fn open(&mut self, req: &Request<'_>, body: &Bytes) -> u32 {
        let id = self.next_id;
        self.next_id += 2;
        let mut block = std::mem::take(&mut self.scratch);
        block.clear();
        let e = &mut self.encoder;
        e.begin(&mut block);
        e.field(&mut block, b":method", b"POST", Kind::Repeated);
        e.field(&mut block, b":scheme", b"http", Kind::Repeated);
        e.field(&mut block, b":path", req.path.as_bytes(), Kind::Repeated);
        e.field(&mut block, b":authority", &self.authority, Kind::Repeated);
        e.field(
            &mut block,
            b"content-type",
            b"application/grpc",
            Kind::Repeated,
        );
        e.field(&mut block, b"te", b"trailers", Kind::Repeated);
        if let Some(t) = req.timeout {
            let value = fanout_server::deadline::format(t);
            e.field(&mut block, b"grpc-timeout", value.as_bytes(), Kind::Varying);
        }
        for (name, value) in req.metadata.into_iter().flatten() {
            e.field(
                &mut block,
                name.as_str().as_bytes(),
                value.as_bytes(),
                Kind::Varying,
            );
        }
        let mut rest = &block[..];
        let mut kind = HEADERS;
        loop {
            let n = rest.len().min(self.max_frame);
            let last = n == rest.len();
            let flags = if last { END_HEADERS } else { 0 };
            frame_head(&mut self.out, n, kind, flags, id);
            self.out.put_slice(&rest[..n]);
            rest = &rest[n..];
            kind = CONTINUATION;
            if last {
                break;
            }
        }
        self.scratch = block;
        let mut stream = Stream {
            send_window: self.initial_window,
            body: Some(body.clone()),
            ..Stream::default()
        };
        if !send_body(
            &mut self.out,
            &mut self.send_window,
            self.max_frame,
            id,
            &mut stream,
        ) {
            self.blocked.push_back(id);
        }
        self.streams.insert(id, stream);
        self.active += 1;
        id
    }

    /// Queues a frame whose payload is one 32-bit value (RST_STREAM, WINDOW_UPDATE).
    fn control(&mut self, kind: u8, id: u32, value: u32) {
        frame_head(&mut self.out, 4, kind, 0, id);
        self.out.put_u32(value);
    }

    /// Ends stream `id` on the wire with `end` (unless it has ended already). Callers whose
    /// peer can no longer hear of the stream (it reset or refused it) drop its body first.
    fn close(&mut self, id: u32, end: Result<(), Status>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.closed {
            return;
        }
        s.closed = true;
        let half_open = s.body.take().is_some();
        s.end = Some(end);
        if let Some(w) = s.waker.take() {
            self.wake.push(w);
        }
        self.active -= 1;
        self.wake.append(&mut self.waiting);
        if half_open {
            // The peer answered before our request was all out: close our half too.
            self.control(RST_STREAM, id, CANCEL);
        }
    }

    /// Ends stream `id` with `end` and tells the peer with RST_STREAM `code` (one reset, whatever
    /// the state of the request body). False if it had ended already.
    fn reset(&mut self, id: u32, code: u32, end: Result<(), Status>) -> bool {
        let Some(s) = self.streams.get_mut(&id).filter(|s| !s.closed) else {
            return false;
        };
        s.body = None;
        self.control(RST_STREAM, id, code);
        self.close(id, end);
        true
    }

    /// Ends the connection: every open call fails with `why`.
    fn fail(&mut self, why: String) {
        if self.ended.is_some() {
            return;
        }
        let ids: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| !s.closed)
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.close(id, Err(connection_status(&why)));
        }
        self.ended = Some(why);
        self.wake.append(&mut self.waiting);
        self.wake.extend(self.ping_waker.take());
        self.wake.extend(self.driver.take());
    }

    /// Sends what flow control now allows of the bodies that waited for it.
    fn flush_blocked(&mut self) {
        let mut i = 0;
        while i < self.blocked.len() && self.send_window > 0 {
            let id = self.blocked[i];
            let done = match self.streams.get_mut(&id) {
                Some(s) if s.body.is_some() => {
                    send_body(&mut self.out, &mut self.send_window, self.max_frame, id, s)
                }
                _ => true,
            };
            if done {
                self.blocked.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn check_stream_id(&self, id: u32, what: &str) -> Result<(), ConnError> {
        if id == 0 {
            return Err(protocol(format!("{what} on stream 0")));
        }
        if id >= self.next_id || id.is_multiple_of(2) {
            return Err(protocol(format!("{what} on stream {id}, never opened")));
        }
        Ok(())
    }

    fn data(&mut self, flags: u8, id: u32, mut payload: Bytes) -> Result<(), ConnError> {
        self.check_stream_id(id, "DATA")?;
        let len = payload.len() as u32;
        self.recv_unacked += len;
        if self.recv_unacked >= CONNECTION_WINDOW / 2 {
            let n = std::mem::take(&mut self.recv_unacked);
            self.control(WINDOW_UPDATE, 0, n);
        }
        if flags & PADDED != 0 {
            let pad = usize::from(
                *payload
                    .first()
                    .ok_or_else(|| protocol("empty padded DATA"))?,
            );
            if pad + 1 > payload.len() {
                return Err(protocol("DATA padding longer than the frame"));
            }
            payload.advance(1);
            payload.truncate(payload.len() - pad);
        }
        let Some(s) = self.streams.get_mut(&id).filter(|s| !s.closed) else {
            // A call we reset: its late data is dropped.
            return Ok(());
        };
        if !s.head {
            let end = Err(Status::internal("the answer sent data before its headers"));
            self.reset(id, PROTOCOL_ERROR, end);
            return Ok(());
        }
        s.unacked += len;
        let give_back = (s.unacked >= STREAM_WINDOW / 2 && flags & END_STREAM == 0)
            .then(|| std::mem::take(&mut s.unacked));
        if !payload.is_empty() {
            s.data.push(payload);
            if let Some(w) = s.waker.take() {
                self.wake.push(w);
            }
        }
        if let Some(n) = give_back {
            self.control(WINDOW_UPDATE, id, n);
        }
        if flags & END_STREAM != 0 {
            self.close(
                id,
                Err(Status::internal("the answer ended without trailers")),
            );
        }
        Ok(())
    }

    fn headers(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        self.check_stream_id(id, "HEADERS")?;
        let mut p = payload;
        if flags & PADDED != 0 {
            let pad = usize::from(*p.first().ok_or_else(|| protocol("empty padded HEADERS"))?);
            if pad + 1 > p.len() {
                return Err(protocol("HEADERS padding longer than the frame"));
            }
            p = &p[1..p.len() - pad];
        }
        if flags & PRIORITY != 0 {
            p = p
                .get(5..)
                .ok_or_else(|| protocol("HEADERS too short for its priority"))?;
        }
        let end_stream = flags & END_STREAM != 0;
        if flags & END_HEADERS != 0 {
            self.header_block(id, end_stream, p)
        } else {
            self.block = Some(Block {
                stream: id,
                end_stream,
                bytes: BytesMut::from(p),
            });
            Ok(())
        }
    }

    fn continuation(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        let Some(mut block) = self.block.take() else {
            return Err(protocol("CONTINUATION without HEADERS"));
        };
        if block.stream != id {
            return Err(protocol("CONTINUATION on another stream"));
        }
        block.bytes.extend_from_slice(payload);
        if block.bytes.len() > MAX_HEADER_BLOCK {
            return Err(protocol("header block over 1 MiB"));
        }
        if flags & END_HEADERS != 0 {
            self.header_block(id, block.end_stream, &block.bytes)
        } else {
            self.block = Some(block);
            Ok(())
        }
    }

    fn header_block(&mut self, id: u32, end_stream: bool, block: &[u8]) -> Result<(), ConnError> {
        let mut f = Fields::default();
        self.decoder
            .decode(block, |name, value| match name {
                b":status" => {
                    f.status = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok())
                }
                b"grpc-status" => {
                    f.grpc_status = Some(match value {
                        b"0" => 0,
                        _ => std::str::from_utf8(value)
                            .ok()
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(Code::Unknown as i32),
                    })
                }
                b"grpc-message" => f.message = Some(Bytes::copy_from_slice(value)),
                b"grpc-status-details-bin" => f.details = Some(Bytes::copy_from_slice(value)),
                _ => {}
            })
            .map_err(|e| ConnError {
                code: COMPRESSION_ERROR,
                what: e.to_string(),
            })?;
        let Some(s) = self.streams.get_mut(&id).filter(|s| !s.closed) else {
            return Ok(());
        };
        let end =
            if !s.head {
                s.head = true;
                match f.status {
                    Some(200) => match f.grpc_result() {
                        // Trailers-only: the status came with the head.
                        Some(result) => Some(result),
                        None if end_stream => Some(Err(Status::internal(
                            "the answer ended without a grpc-status",
                        ))),
                        None => None,
                    },
                    Some(code) => Some(Err(http_status(code))),
                    None => Some(Err(Status::internal("the answer has no :status"))),
                }
            } else if !end_stream {
                Some(Err(Status::internal("trailers that do not end the answer")))
            } else {
                Some(f.grpc_result().unwrap_or_else(|| {
                    Err(Status::internal("the answer ended without a grpc-status"))
                }))
            };
        match end {
            Some(end) if !end_stream => {
                self.reset(id, CANCEL, end);
            }
            Some(end) => self.close(id, end),
            None => {}
        }
        Ok(())
    }

    fn settings(&mut self, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if id != 0 {
            return Err(protocol("SETTINGS on a stream"));
        }
        if flags & ACK != 0 {
            return match payload.is_empty() {
                true => Ok(()),
                false => Err(ConnError {
                    code: FRAME_SIZE_ERROR,
                    what: "SETTINGS ACK with a payload".into(),
                }),
            };
        }
        if !payload.len().is_multiple_of(6) {
            return Err(ConnError {
                code: FRAME_SIZE_ERROR,
                what: "SETTINGS of a length not a multiple of 6".into(),
            });
        }
        self.got_settings = true;
        for setting in payload.chunks(6) {
            let key = u16::from_be_bytes([setting[0], setting[1]]);
            let value = u32::from_be_bytes([setting[2], setting[3], setting[4], setting[5]]);
            match key {
                SETTINGS_HEADER_TABLE_SIZE => self.encoder.set_allowed(value as usize),
                SETTINGS_ENABLE_PUSH if value > 1 => {
                    return Err(protocol("SETTINGS_ENABLE_PUSH over 1"));
                }
                SETTINGS_MAX_CONCURRENT_STREAMS => {
                    self.max_concurrent = value as usize;
                    self.wake.append(&mut self.waiting);
                }
                SETTINGS_INITIAL_WINDOW_SIZE => {
                    if i64::from(value) > MAX_WINDOW {
                        return Err(ConnError {
                            code: FLOW_CONTROL_ERROR,
                            what: "SETTINGS_INITIAL_WINDOW_SIZE over 2^31-1".into(),
                        });
                    }
                    let delta = i64::from(value) - self.initial_window;
                    self.initial_window = i64::from(value);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                    }
                }
                SETTINGS_MAX_FRAME_SIZE => {
                    if !(16_384..=16_777_215).contains(&value) {
                        return Err(protocol("SETTINGS_MAX_FRAME_SIZE out of range"));
                    }
                    self.max_frame = value as usize;
                }
                _ => {}
            }
        }
        frame_head(&mut self.out, 0, SETTINGS, ACK, 0);
        self.flush_blocked();
        Ok(())
    }

    /// Handles one frame from the peer.
    fn receive(&mut self, kind: u8, flags: u8, id: u32, payload: &[u8]) -> Result<(), ConnError> {
        if !self.got_settings && kind != SETTINGS {
            return Err(protocol(
                "the server's first frame is not SETTINGS: it does not speak HTTP/2 (gRPC)",
            ));
        }
        if self.block.is_some() && kind != CONTINUATION {
            return Err(protocol("a frame inside a header block"));
        }
        match kind {
            HEADERS => self.headers(flags, id, payload)?,
            CONTINUATION => self.continuation(flags, id, payload)?,
            SETTINGS => self.settings(flags, id, payload)?,
            RST_STREAM => {
                self.check_stream_id(id, "RST_STREAM")?;
                let code: [u8; 4] = payload.try_into().map_err(|_| ConnError {
                    code: FRAME_SIZE_ERROR,
                    what: "RST_STREAM not 4 bytes".into(),
                })?;
                let code = u32::from_be_bytes(code);
                if let Some(s) = self.streams.get_mut(&id) {
                    // Reset by the peer: nothing more may be sent on it.
                    s.body = None;
                }
                self.close(id, Err(reset_status(code)));
            }
            PING => {
                let opaque: [u8; 8] = payload.try_into().map_err(|_| ConnError {
                    code: FRAME_SIZE_ERROR,
                    what: "PING not 8 bytes".into(),
                })?;
                if id != 0 {
                    return Err(protocol("PING on a stream"));
                }
                if flags & ACK != 0 {
                    let n = u64::from_be_bytes(opaque);
                    if n <= self.pings_sent && n > self.pings_acked {
                        self.pings_acked = n;
                        self.wake.extend(self.ping_waker.take());
                    }
                } else {
                    frame_head(&mut self.out, 8, PING, ACK, 0);
                    self.out.put_slice(&opaque);
                }
            }
            GOAWAY => {
                if payload.len() < 8 || id != 0 {
                    return Err(protocol("malformed GOAWAY"));
                }
                let last = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff;
                let code = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]);
                let why = format!(
                    "the server is closing the connection (GOAWAY {})",
                    reason_name(code)
                );
                let refused: Vec<u32> = self
                    .streams
                    .iter()
                    .filter(|(sid, s)| **sid > last && !s.closed)
                    .map(|(sid, _)| *sid)
                    .collect();
                for sid in refused {
                    if let Some(s) = self.streams.get_mut(&sid) {
                        s.body = None;
                    }
                    self.close(sid, Err(connection_status(&why)));
                }
                self.going_away = Some(why);
                self.wake.append(&mut self.waiting);
                self.wake.extend(self.driver.take());
            }
            WINDOW_UPDATE => {
                let inc: [u8; 4] = payload.try_into().map_err(|_| ConnError {
                    code: FRAME_SIZE_ERROR,
                    what: "WINDOW_UPDATE not 4 bytes".into(),
                })?;
                let inc = i64::from(u32::from_be_bytes(inc) & 0x7fff_ffff);
                if id == 0 {
                    if inc == 0 {
                        return Err(protocol("WINDOW_UPDATE of 0 on the connection"));
                    }
                    self.send_window += inc;
                    if self.send_window > MAX_WINDOW {
                        return Err(ConnError {
                            code: FLOW_CONTROL_ERROR,
                            what: "the connection's window over 2^31-1".into(),
                        });
                    }
                } else {
                    self.check_stream_id(id, "WINDOW_UPDATE")?;
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.send_window += inc;
                    }
                }
                self.flush_blocked();
            }
            PUSH_PROMISE => return Err(protocol("PUSH_PROMISE, though push is disabled")),
            // PRIORITY, and frame types this end does not know, are ignored.
            _ => {}
        }
        Ok(())
    }
}

/// What the client handles and the driver share.
#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Live [`Client`] handles: with none left and no call open, the driver ends.
    handles: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Opens a TCP connection to `authority` (a host name, an IPv4 address or a bracketed IPv6 one,
/// and a port: `default_port` if it has none) within `limit`, with Nagle's algorithm off: a
/// request must leave when it is written. The error says why, for the caller to put in context.
pub async fn connect(
    authority: &http::uri::Authority,
    default_port: u16,
    limit: Duration,
) -> Result<TcpStream, String> {
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(default_port);
    let tcp = tokio::time::timeout(limit, TcpStream::connect((host, port)))
        .await
        .map_err(|_| format!("no connection within {limit:?}"))?
        .map_err(|e| e.to_string())?;
    tcp.set_nodelay(true).map_err(|e| e.to_string())?;
    Ok(tcp)
}

/// Starts an HTTP/2 connection over `io` to the server at `authority` (`host:port`, sent as
/// `:authority`). Nothing is awaited: the preface and our SETTINGS go out with the first write
/// of the [`Driver`], which must be polled (spawned) for anything to happen.
pub fn handshake(io: TcpStream, authority: &str) -> (Client, Driver) {
    let mut state = State::new(authority);
    let out = &mut state.out;
    out.put_slice(PREFACE);
    frame_head(out, 12, SETTINGS, 0, 0);
    out.put_u16(SETTINGS_ENABLE_PUSH);
    out.put_u32(0);
    out.put_u16(SETTINGS_INITIAL_WINDOW_SIZE);
    out.put_u32(STREAM_WINDOW);
    state.control(WINDOW_UPDATE, 0, CONNECTION_WINDOW - DEFAULT_WINDOW);
    let shared = Arc::new(Shared {
        state: Mutex::new(state),
        handles: AtomicUsize::new(1),
    });
    (
        Client {
            shared: shared.clone(),
        },
        Driver {
            shared,
            io,
            read: BytesMut::with_capacity(32 * 1024),
            write: BytesMut::with_capacity(16 * 1024),
            written: 0,
            wake: Vec::new(),
            finished: false,
            coalesce: false,
            deferred: false,
        },
    )
}

/// A handle on the connection for callers; clones share it.
#[derive(Debug)]
pub struct Client {
    shared: Arc<Shared>,
}

impl Clone for Client {
    fn clone(&self) -> Self {
        self.shared.handles.fetch_add(1, Relaxed);
        Client {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        if self.shared.handles.fetch_sub(1, AcqRel) == 1 {
            let driver = self.shared.lock().driver.take();
            if let Some(w) = driver {
                w.wake();
            }
        }
    }
}

/// Wakes `wakers` (after the lock that collected them is released).
fn wake_all(wakers: &mut Vec<Waker>) {
    for w in wakers.drain(..) {
        w.wake();
    }
}

impl Client {
    /// Whether the connection has ended or is closing: new calls on it fail at once.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().is_closed()
    }

    /// Ends the connection now: calls on it fail as UNAVAILABLE with "connection failed: `why`".
    pub fn abort(&self, why: String) {
        let mut st = self.shared.lock();
        st.fail(why);
        let mut wake = std::mem::take(&mut st.wake);
        drop(st);
        wake_all(&mut wake);
    }

    /// Opens a stream for `req` and queues its frames, once the peer's stream limit allows.
    pub fn poll_open(
        &self,
        cx: &mut Context<'_>,
        req: &Request<'_>,
        body: &Bytes,
    ) -> Poll<Result<Call<'_>, Status>> {
        let mut st = self.shared.lock();
        if let Some(refused) = st.refusal() {
            return Poll::Ready(Err(refused));
        }
        if st.active >= st.max_concurrent {
            st.waiting.push(cx.waker().clone());
            return Poll::Pending;
        }
        if st.next_id > MAX_WINDOW as u32 - 2 {
            st.going_away = Some("its stream ids are used up".into());
            return Poll::Ready(Err(connection_status("its stream ids are used up")));
        }
        let id = st.open(req, body);
        let driver = st.driver.take();
        drop(st);
        if let Some(w) = driver {
            w.wake();
        }
        Poll::Ready(Ok(Call {
            client: self,
            id,
            done: false,
        }))
    }

    /// Sends a PING and waits for its answer; fails if the connection ends first.
    pub async fn ping(&self) -> Result<(), String> {
        let n = {
            let mut st = self.shared.lock();
            if let Some(why) = &st.ended {
                return Err(why.clone());
            }
            st.pings_sent += 1;
            let n = st.pings_sent;
            frame_head(&mut st.out, 8, PING, 0, 0);
            st.out.put_u64(n);
            let driver = st.driver.take();
            drop(st);
            if let Some(w) = driver {
                w.wake();
            }
            n
        };
        std::future::poll_fn(|cx| {
            let mut st = self.shared.lock();
            if st.pings_acked >= n {
                return Poll::Ready(Ok(()));
            }
            if let Some(why) = &st.ended {
                return Poll::Ready(Err(why.clone()));
            }
            st.ping_waker = Some(cx.waker().clone());
            Poll::Pending
        })
        .await
    }
}

/// One call's stream. Dropping it before the answer ended resets the stream (CANCEL).
#[derive(Debug)]
pub struct Call<'a> {
    client: &'a Client,
    id: u32,
    done: bool,
}

impl Call<'_> {
    /// Moves the answer's bytes received so far into `chunks` (which must be empty); ready
    /// with `None` when there were some, with how the answer ended once it has.
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        chunks: &mut Vec<Bytes>,
    ) -> Poll<Option<Result<(), Status>>> {
        let mut st = self.client.shared.lock();
        let Some(s) = st.streams.get_mut(&self.id) else {
            self.done = true;
            return Poll::Ready(Some(Err(Status::internal("the call's stream is gone"))));
        };
        std::mem::swap(&mut s.data, chunks);
        if let Some(end) = s.end.take() {
            st.streams.remove(&self.id);
            self.done = true;
            return Poll::Ready(Some(end));
        }
        if !chunks.is_empty() {
            return Poll::Ready(None);
        }
        if s.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            s.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.client.shared.lock();
        if st.reset(
            self.id,
            CANCEL,
            Err(Status::cancelled("cancelled by the caller")),
        ) {
            let driver = st.driver.take();
            st.wake.extend(driver);
        }
        st.streams.remove(&self.id);
        let mut wake = std::mem::take(&mut st.wake);
        drop(st);
        wake_all(&mut wake);
    }
}

/// The future that reads and writes the connection's socket. It ends when the connection
/// does: closed by the peer, broken, ended by [`Client::abort`], or no longer used (every
/// [`Client`] dropped and no call open).
#[derive(Debug)]
pub struct Driver {
    shared: Arc<Shared>,
    io: TcpStream,
    read: BytesMut,
    write: BytesMut,
    written: usize,
    wake: Vec<Waker>,
    finished: bool,
    /// See [`Driver::coalescing`].
    coalesce: bool,
    /// Whether this write has already waited one turn.
    deferred: bool,
}

impl Driver {
    /// Makes the driver wait one turn of the scheduler before it writes what callers queued, so
    /// that the other tasks ready on its worker (more calls starting) add theirs to the same
    /// write. For a driver spawned as a task of its own, woken by callers on other tasks; a
    /// driver polled beside its callers (the loadgen) gathers their writes anyway.
    pub fn coalescing(mut self) -> Self {
        self.coalesce = true;
        self
    }

    fn finish(&mut self, why: String) -> Poll<()> {
        let mut st = self.shared.lock();
        st.fail(why);
        std::mem::swap(&mut st.wake, &mut self.wake);
        drop(st);
        wake_all(&mut self.wake);
        self.finished = true;
        Poll::Ready(())
    }

    /// Handles every whole frame in the read buffer.
    fn process(&mut self) -> Result<(), ConnError> {
        let mut st = self.shared.lock();
        let result = loop {
            if self.read.len() < 9 {
                break Ok(());
            }
            let len = (usize::from(self.read[0]) << 16)
                | (usize::from(self.read[1]) << 8)
                | usize::from(self.read[2]);
            if len > MAX_FRAME {
                break Err(ConnError {
                    code: FRAME_SIZE_ERROR,
                    what: match st.got_settings {
                        true => format!("a frame of {len} bytes, over {MAX_FRAME}"),
                        false => "the server does not speak HTTP/2 (gRPC)".into(),
                    },
                });
            }
            if self.read.len() < 9 + len {
                break Ok(());
            }
            let kind = self.read[3];
            let flags = self.read[4];
            let id = u32::from_be_bytes([self.read[5], self.read[6], self.read[7], self.read[8]])
                & 0x7fff_ffff;
            let r = if kind == DATA && st.got_settings && st.block.is_none() {
                self.read.advance(9);
                let payload = self.read.split_to(len).freeze();
                st.data(flags, id, payload)
            } else {
                let r = st.receive(kind, flags, id, &self.read[9..9 + len]);
                self.read.advance(9 + len);
                r
            };
            if r.is_err() {
                break r;
            }
        };
        std::mem::swap(&mut st.wake, &mut self.wake);
        drop(st);
        wake_all(&mut self.wake);
        result
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        if this.finished {
            return Poll::Ready(());
        }
        loop {
            let mut progress = false;
            {
                let mut st = this.shared.lock();
                if st.ended.is_some() {
                    drop(st);
                    this.finished = true;
                    return Poll::Ready(());
                }
                if this.written == this.write.len() {
                    this.write.clear();
                    this.written = 0;
                    if !st.out.is_empty() && this.coalesce && !this.deferred {
                        // Woken by our own waker, a tokio task goes to the back of its
                        // worker's queue: everything else ready there runs first.
                        this.deferred = true;
                        drop(st);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    } else if !st.out.is_empty() {
                        this.deferred = false;
                        std::mem::swap(&mut st.out, &mut this.write);
                    } else if st.active == 0
                        && (this.shared.handles.load(Acquire) == 0 || st.going_away.is_some())
                    {
                        let why = st
                            .going_away
                            .clone()
                            .unwrap_or_else(|| "the client was dropped".into());
                        drop(st);
                        return this.finish(why);
                    }
                }
                if st.driver.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
                    st.driver = Some(cx.waker().clone());
                }
            }
            while this.written < this.write.len() {
                match Pin::new(&mut this.io).poll_write(cx, &this.write[this.written..]) {
                    Poll::Ready(Ok(0)) => return this.finish("the socket takes no more".into()),
                    Poll::Ready(Ok(n)) => {
                        this.written += n;
                        progress = true;
                    }
                    Poll::Ready(Err(e)) => return this.finish(format!("write failed: {e}")),
                    Poll::Pending => break,
                }
            }
            if this.read.capacity() - this.read.len() < 4096 {
                this.read.reserve(32 * 1024);
            }
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.io), cx, &mut this.read) {
                Poll::Ready(Ok(0)) => {
                    return this.finish("the server closed the connection".into());
                }
                Poll::Ready(Ok(_)) => {
                    progress = true;
                    if let Err(e) = this.process() {
                        // Tell the peer why, if the socket takes it now; then end.
                        let mut goaway = BytesMut::new();
                        frame_head(&mut goaway, 8, GOAWAY, 0, 0);
                        goaway.put_u32(0);
                        goaway.put_u32(e.code);
                        let _ = Pin::new(&mut this.io).poll_write(cx, &goaway);
                        let why = match e.code {
                            PROTOCOL_ERROR => format!("protocol error: {}", e.what),
                            code => format!("{} ({})", e.what, reason_name(code)),
                        };
                        return this.finish(why);
                    }
                }
                Poll::Ready(Err(e)) => return this.finish(format!("read failed: {e}")),
                Poll::Pending => {}
            }
            if !progress {
                return Poll::Pending;
            }
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.finish("the connection's task was dropped".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reset_and_http_statuses_map_to_grpc_codes() {
        assert_eq!(reset_status(0x7).code(), Code::Unavailable);
        assert_eq!(reset_status(0x8).code(), Code::Cancelled);
        assert_eq!(reset_status(0xb).code(), Code::ResourceExhausted);
        assert_eq!(reset_status(0x2).code(), Code::Internal);
        assert!(reset_status(0x2).message().contains("INTERNAL_ERROR"));
        assert_eq!(http_status(404).code(), Code::Unimplemented);
        assert_eq!(http_status(503).code(), Code::Unavailable);
        assert_eq!(http_status(418).code(), Code::Unknown);
        assert_eq!(reason_name(0x42), "error code 0x42");
    }

    #[test]
    fn error_trailers_become_tonic_statuses() {
        let f = Fields {
            status: Some(200),
            grpc_status: Some(14),
            message: Some(Bytes::from_static(b"backend%20down")),
            details: None,
        };
        let s = f.grpc_result().unwrap().unwrap_err();
        assert_eq!(s.code(), Code::Unavailable);
        assert_eq!(s.message(), "backend down");
        let ok = Fields {
            grpc_status: Some(0),
            ..Fields::default()
        };
        assert!(ok.grpc_result().unwrap().is_ok());
        assert!(Fields::default().grpc_result().is_none());
    }
}
