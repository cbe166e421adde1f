//! Unary and server-streaming gRPC calls straight over an `h2` connection: the request
//! encoded once and sent as one DATA frame, the answer cut into messages as it arrives, the
//! status read from the trailers (with tonic's own `Status::from_header_map`).
//!
//! Both clients of this workspace call through this rather than tonic's generated clients,
//! for speed: tonic's `Channel` hands each call to a buffer task, then hyper's dispatch
//! channel, then (for the request body) a task of its own, and its codec adds encoder and
//! decoder streams. Going straight to `h2` cut the aggregator's CPU per aggregate call by about
//! a third and, with batched writes, the loadgen's per call by more than half (BENCHMARKS.md
//! §2 and §3). What a client needs beyond this (connecting, reconnecting,
//! keepalive) is the caller's: see `loadgen/src/conn.rs` and `aggregator/src/backends.rs`.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h2::client::SendRequest;
use h2::{Reason, RecvStream};
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::{Method, Request, Uri};
use tonic::{Code, Status};

/// The largest answer read (tonic's default limit too).
const MAX_MESSAGE: usize = 4 << 20;

/// `message` as one gRPC length-prefixed message (not compressed).
pub fn frame(message: &impl prost::Message) -> Bytes {
    let len = message.encoded_len();
    let mut body = BytesMut::with_capacity(5 + len);
    body.put_u8(0);
    body.put_u32(len as u32);
    message
        .encode(&mut body)
        .expect("the buffer was sized for the message");
    body.freeze()
}

/// The head of a gRPC request to `uri` (which has scheme, authority and the method's path):
/// POST, `content-type`, `te: trailers`, and `grpc-timeout` when given.
pub fn head(uri: Uri, timeout: Option<Duration>) -> Request<()> {
    let mut request = Request::new(());
    *request.method_mut() = Method::POST;
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    if let Some(t) = timeout {
        headers.insert("grpc-timeout", timeout_value(t));
    }
    request
}

/// A `grpc-timeout` header value for `t`.
pub fn timeout_value(t: Duration) -> HeaderValue {
    HeaderValue::from_str(&crate::deadline::format(t)).expect("digits and a unit")
}

/// Sends `head` with `body` (one framed message) over `send` and hands each message of the
/// answer to `each` as it arrives; ends with the call's status. Dropping the future resets the
/// stream (the server sees the call cancelled).
pub async fn call(
    send: &mut SendRequest<Bytes>,
    head: Request<()>,
    body: Bytes,
    mut each: impl FnMut(Bytes) -> Result<(), Status>,
) -> Result<(), Status> {
    std::future::poll_fn(|cx| send.poll_ready(cx))
        .await
        .map_err(h2_status)?;
    let (response, mut request_body) = send.send_request(head, false).map_err(h2_status)?;
    request_body.send_data(body, true).map_err(h2_status)?;
    let response = response.await.map_err(h2_status)?;
    let (head, mut stream) = response.into_parts();
    if head.status != http::StatusCode::OK {
        return Err(http_status(head.status));
    }
    // Trailers-only: an error answered in the headers.
    if let Some(status) = Status::from_header_map(&head.headers) {
        return match status.code() {
            Code::Ok => Ok(()),
            _ => Err(status),
        };
    }
    let mut frames = Frames::default();
    while let Some(data) = stream.data().await {
        let data = data.map_err(h2_status)?;
        let _ = stream.flow_control().release_capacity(data.len());
        frames.push(data);
        while let Some(message) = frames.next()? {
            each(message)?;
        }
    }
    if !frames.is_empty() {
        return Err(Status::internal("the answer ended inside a message"));
    }
    status_of(&mut stream).await
}

/// Like [`call`], for exactly one answer message.
pub async fn unary(
    send: &mut SendRequest<Bytes>,
    head: Request<()>,
    body: Bytes,
) -> Result<Bytes, Status> {
    let mut answer = None;
    call(send, head, body, |message| {
        if answer.is_some() {
            return Err(Status::internal(
                "a unary call was answered with two messages",
            ));
        }
        answer = Some(message);
        Ok(())
    })
    .await?;
    answer.ok_or_else(|| Status::internal("a unary call was answered with no message"))
}

/// Decodes one answer message.
pub fn decode<M: prost::Message + Default>(message: Bytes) -> Result<M, Status> {
    M::decode(message).map_err(|e| Status::internal(format!("cannot decode the answer: {e}")))
}

/// Splits the bytes of an answer into gRPC messages (a compressed-flag byte, a 4-byte
/// big-endian length, the message).
#[derive(Default)]
struct Frames {
    buffer: BytesMut,
    /// The data frame received last, when nothing was buffered before it: most answers are one
    /// whole message in one frame, taken without a copy.
    whole: Option<Bytes>,
}

impl Frames {
    fn push(&mut self, data: Bytes) {
        if let Some(previous) = self.whole.take() {
            self.buffer.extend_from_slice(&previous);
        }
        if self.buffer.is_empty() {
            self.whole = Some(data);
        } else {
            self.buffer.extend_from_slice(&data);
        }
    }

    fn is_empty(&self) -> bool {
        self.buffer.is_empty() && self.whole.as_ref().is_none_or(Bytes::is_empty)
    }

    /// The next whole message, if there is one.
    fn next(&mut self) -> Result<Option<Bytes>, Status> {
        let available = match &self.whole {
            Some(w) => &w[..],
            None => &self.buffer[..],
        };
        if available.len() < 5 {
            if let Some(w) = self.whole.take() {
                self.buffer.extend_from_slice(&w);
            }
            return Ok(None);
        }
        if available[0] != 0 {
            return Err(Status::internal(
                "the answer is compressed, which the loadgen did not ask for",
            ));
        }
        let len =
            u32::from_be_bytes([available[1], available[2], available[3], available[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(Status::resource_exhausted(format!(
                "an answer of {len} bytes is over the loadgen's limit of {MAX_MESSAGE}"
            )));
        }
        if available.len() < 5 + len {
            if let Some(w) = self.whole.take() {
                self.buffer.extend_from_slice(&w);
            }
            return Ok(None);
        }
        Ok(Some(match &mut self.whole {
            Some(w) => {
                w.advance(5);
                let message = w.split_to(len);
                if w.is_empty() {
                    self.whole = None;
                }
                message
            }
            None => {
                self.buffer.advance(5);
                self.buffer.split_to(len).freeze()
            }
        }))
    }
}

/// The call's status from the trailers.
async fn status_of(stream: &mut RecvStream) -> Result<(), Status> {
    let trailers = stream.trailers().await.map_err(h2_status)?;
    let Some(trailers) = trailers else {
        return Err(Status::internal("the answer ended without trailers"));
    };
    // The common case without building a Status (which copies the trailers).
    if trailers.get("grpc-status").is_some_and(|v| v == "0") {
        return Ok(());
    }
    match Status::from_header_map(&trailers) {
        Some(s) if s.code() == Code::Ok => Ok(()),
        Some(s) => Err(s),
        None => Err(Status::internal("the answer ended without a grpc-status")),
    }
}

/// The gRPC code for an HTTP status other than 200 (the gRPC over HTTP/2 spec's mapping).
fn http_status(status: http::StatusCode) -> Status {
    let code = match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502 | 503 | 504 => Code::Unavailable,
        _ => Code::Unknown,
    };
    Status::new(code, format!("HTTP status {status}"))
}

/// The gRPC code for an HTTP/2 error: the connection or the stream failed, locally or at the
/// peer (as tonic maps them). A broken or closing connection is `UNAVAILABLE`.
pub fn h2_status(e: h2::Error) -> Status {
    if e.is_io() || e.is_go_away() {
        return Status::unavailable(format!("connection failed: {e}"));
    }
    let code = match e.reason() {
        Some(Reason::REFUSED_STREAM) => Code::Unavailable,
        Some(Reason::CANCEL) => Code::Cancelled,
        Some(Reason::ENHANCE_YOUR_CALM) => Code::ResourceExhausted,
        Some(Reason::INADEQUATE_SECURITY) => Code::PermissionDenied,
        _ => Code::Internal,
    };
    Status::new(code, format!("HTTP/2 stream error: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    fn messages(chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, Status> {
        let mut frames = Frames::default();
        let mut out = Vec::new();
        for c in chunks {
            frames.push(Bytes::copy_from_slice(c));
            while let Some(m) = frames.next()? {
                out.push(m.to_vec());
            }
        }
        assert!(frames.is_empty(), "bytes left over");
        Ok(out)
    }

    #[test]
    fn messages_are_cut_out_however_the_bytes_arrive() {
        let mut all = framed(b"one");
        all.extend(framed(b""));
        all.extend(framed(b"three"));
        let want = vec![b"one".to_vec(), vec![], b"three".to_vec()];
        assert_eq!(messages(&[&all]).unwrap(), want, "one frame");
        for cut in 1..all.len() {
            assert_eq!(
                messages(&[&all[..cut], &all[cut..]]).unwrap(),
                want,
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = all.iter().map(std::slice::from_ref).collect();
        assert_eq!(messages(&bytes).unwrap(), want, "byte by byte");
    }

    #[test]
    fn compressed_or_oversized_answers_are_errors() {
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        assert_eq!(messages(&[&compressed]).unwrap_err().code(), Code::Internal);
        let huge = [0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            messages(&[&huge]).unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn http_and_h2_failures_map_to_grpc_codes() {
        let request = fanout_proto::v1::FetchRequest {
            query: "q".into(),
            ..Default::default()
        };
        assert_eq!(&frame(&request)[..], b"\x00\x00\x00\x00\x03\x0a\x01\x71");
        assert_eq!(
            http_status(http::StatusCode::NOT_FOUND).code(),
            Code::Unimplemented
        );
        assert_eq!(
            http_status(http::StatusCode::SERVICE_UNAVAILABLE).code(),
            Code::Unavailable
        );
        assert_eq!(
            http_status(http::StatusCode::IM_A_TEAPOT).code(),
            Code::Unknown
        );
        assert_eq!(
            h2_status(h2::Error::from(Reason::REFUSED_STREAM)).code(),
            Code::Unavailable
        );
        assert_eq!(
            h2_status(h2::Error::from(Reason::CANCEL)).code(),
            Code::Cancelled
        );
    }
}
