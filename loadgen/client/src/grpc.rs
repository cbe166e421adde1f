//! gRPC on top of the `h2` streams of [`crate::conn`]: a request's message framed once (the
//! 5-byte length prefix), an answer's bytes cut back into messages as they arrive, and a call's
//! status read from the trailers or from the HTTP or HTTP/2 failure that ended it (the gRPC over
//! HTTP/2 spec's mappings). HTTP/2 itself is `h2`'s; this is only what gRPC adds to it.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use tonic::{Code, Status};

/// The largest answer message read (tonic's default limit too).
const MAX_MESSAGE: usize = 4 << 20;

/// `message` as one gRPC length-prefixed message, not compressed: the loadgen sends no
/// `grpc-encoding`.
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

/// Decodes one answer message.
pub fn decode<M: prost::Message + Default>(message: Bytes) -> Result<M, Status> {
    M::decode(message).map_err(|e| Status::internal(format!("cannot decode the answer: {e}")))
}

/// Splits the bytes of an answer into gRPC messages (a compressed-flag byte, a 4-byte
/// big-endian length, the message), however the DATA frames cut them.
#[derive(Default)]
pub struct Messages {
    buffer: BytesMut,
    /// The chunk received last, when nothing was buffered before it: most answers are one whole
    /// message in one DATA frame, taken without a copy.
    whole: Option<Bytes>,
}

impl Messages {
    /// Moves a chunk held whole into the buffer, for more bytes to join it.
    fn keep_whole(&mut self) {
        if let Some(whole) = self.whole.take() {
            self.buffer.extend_from_slice(&whole);
        }
    }

    /// Adds the next chunk of the answer.
    pub fn push(&mut self, data: Bytes) {
        self.keep_whole();
        if self.buffer.is_empty() {
            self.whole = Some(data);
        } else {
            self.buffer.extend_from_slice(&data);
        }
    }

    /// Whether no part of a message is left over.
    pub fn is_empty(&self) -> bool {
        self.buffer.is_empty() && self.whole.as_ref().is_none_or(Bytes::is_empty)
    }

    /// The next whole message, if there is one. A compressed message is an error: the loadgen
    /// sends no `grpc-accept-encoding`, so a compliant server never compresses.
    pub fn next_message(&mut self) -> Result<Option<Bytes>, Status> {
        let available = match &self.whole {
            Some(w) => &w[..],
            None => &self.buffer[..],
        };
        if available.len() < 5 {
            self.keep_whole();
            return Ok(None);
        }
        if available[0] != 0 {
            return Err(Status::internal(
                "the answer is compressed, which the loadgen did not ask for \
                 (it sends no grpc-accept-encoding)",
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
            self.keep_whole();
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

/// The call's status from its trailers (or, for a trailers-only answer, its headers); `None`
/// when they carry no `grpc-status`.
pub fn status(trailers: &HeaderMap) -> Option<Result<(), Status>> {
    // The common case without building a Status (which copies the headers).
    if trailers.get("grpc-status").is_some_and(|v| v == "0") {
        return Some(Ok(()));
    }
    Status::from_header_map(trailers).map(|s| match s.code() {
        Code::Ok => Ok(()),
        _ => Err(s),
    })
}

/// The gRPC status for an HTTP status other than 200 (the gRPC over HTTP/2 spec's mapping).
pub fn http_status(status: http::StatusCode) -> Status {
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

/// Whether `e` ended the whole connection (a GOAWAY, sent or received, or a broken socket)
/// rather than one stream.
pub fn ends_connection(e: &h2::Error) -> bool {
    e.is_io() || e.is_go_away()
}

/// Why the server provably never processed a call whose stream `e` ended before any answer
/// (RFC 9113 §8.7): such a call is safe to send again (gRFC A6's transparent retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unprocessed {
    /// The server reset the stream with REFUSED_STREAM: send it again on the same connection.
    Refused,
    /// The stream is above the last stream id of the server's GOAWAY (or was not sent, the
    /// GOAWAY having come first): only another connection can take it.
    AboveGoAway,
}

/// Whether `e`, ending a call's stream before the answer's headers came, says the server never
/// processed the call. Only what the server said counts: a REFUSED_STREAM reset, or its GOAWAY
/// (`h2` gives a stream the GOAWAY's error only when its id is above the last stream id). Any
/// other reset (CANCEL, INTERNAL_ERROR, ...), a connection `h2` itself ended, or a broken socket
/// may have come after the server began the call. A reset after the headers is not asked
/// about: the call was processed.
pub fn unprocessed(e: &h2::Error) -> Option<Unprocessed> {
    if !e.is_remote() {
        None
    } else if e.is_reset() && e.reason() == Some(h2::Reason::REFUSED_STREAM) {
        Some(Unprocessed::Refused)
    } else if e.is_go_away() {
        Some(Unprocessed::AboveGoAway)
    } else {
        None
    }
}

/// The gRPC status for an HTTP/2 failure. One that ends the connection is UNAVAILABLE, as for
/// tonic's `Channel` (the call never reached, or can no longer reach, the server); a stream
/// reset gets tonic's mapping of its reason (REFUSED_STREAM is UNAVAILABLE, CANCEL is
/// CANCELLED, ...).
pub fn h2_status(e: h2::Error) -> Status {
    if ends_connection(&e) {
        Status::unavailable(format!("connection failed: {e}"))
    } else {
        Status::from(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h2::Reason;

    fn framed(message: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(message.len() as u32).to_be_bytes());
        v.extend_from_slice(message);
        v
    }

    fn messages(chunks: &[&[u8]]) -> Result<Vec<Vec<u8>>, Status> {
        let mut messages = Messages::default();
        let mut out = Vec::new();
        for c in chunks {
            messages.push(Bytes::copy_from_slice(c));
            while let Some(m) = messages.next_message()? {
                out.push(m.to_vec());
            }
        }
        assert!(messages.is_empty(), "bytes left over");
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
    fn compressed_or_oversized_answers_are_errors_not_panics() {
        let mut compressed = framed(b"x");
        compressed[0] = 1;
        let e = messages(&[&compressed]).unwrap_err();
        assert_eq!(e.code(), Code::Internal);
        assert!(e.message().contains("compressed"), "{e:?}");
        let huge = [0, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(
            messages(&[&huge]).unwrap_err().code(),
            Code::ResourceExhausted
        );
    }

    #[test]
    fn a_message_is_framed_with_its_length() {
        let request = fanout_proto::v1::FetchRequest {
            query: "q".into(),
            ..Default::default()
        };
        // The body scripts/bench-raw.sh gives h2load.
        assert_eq!(&frame(&request)[..], b"\x00\x00\x00\x00\x03\x0a\x01\x71");
    }

    #[test]
    fn the_status_comes_from_the_trailers() {
        let mut trailers = HeaderMap::new();
        assert!(status(&trailers).is_none());
        trailers.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(status(&trailers), Some(Ok(()))));
        trailers.insert("grpc-status", "14".parse().unwrap());
        trailers.insert("grpc-message", "down%20for%20a%20bit".parse().unwrap());
        let s = status(&trailers).unwrap().unwrap_err();
        assert_eq!(
            (s.code(), s.message()),
            (Code::Unavailable, "down for a bit")
        );
    }

    #[test]
    fn only_what_the_server_said_makes_a_call_unprocessed() {
        // Refusals and GOAWAYs from the peer are tested against a server
        // (loadgen/tests/it/refused_streams.rs): `h2` makes no such error but from the wire. The same
        // reasons not from the peer say nothing of what it processed.
        for reason in [Reason::REFUSED_STREAM, Reason::CANCEL, Reason::NO_ERROR] {
            assert_eq!(unprocessed(&h2::Error::from(reason)), None, "{reason:?}");
        }
    }

    #[test]
    fn http_and_h2_failures_map_to_grpc_codes() {
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
        let reset = |r| h2_status(h2::Error::from(r)).code();
        assert_eq!(reset(Reason::REFUSED_STREAM), Code::Unavailable);
        assert_eq!(reset(Reason::CANCEL), Code::Cancelled);
        assert_eq!(reset(Reason::ENHANCE_YOUR_CALM), Code::ResourceExhausted);
    }
}
