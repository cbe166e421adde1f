//! Unary and server-streaming gRPC calls over a [`crate::http2`] connection: the request
//! encoded once and sent as one DATA frame, the answer cut into messages as it arrives, the
//! status read from the trailers.
//!
//! Both clients of this workspace call through this rather than tonic's generated clients,
//! for speed: tonic's `Channel` hands each call to a buffer task, then hyper's dispatch
//! channel, then (for the request body) a task of its own, and its codec adds encoder and
//! decoder streams (BENCHMARKS.md §2 and §3). What a client needs beyond this (connecting,
//! reconnecting, keepalive) is the caller's: see `loadgen/src/conn.rs` and
//! `aggregator/src/backends.rs`.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tonic::Status;

use crate::http2::{Client, Request};

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

/// Sends `req` with `body` (one framed message) over `client` and hands each message of the
/// answer to `each` as it arrives; ends with the call's status. A connection that cannot take
/// the call, breaks or closes under it is UNAVAILABLE. Dropping the future resets the stream
/// (the server sees the call cancelled).
pub async fn call(
    client: &Client,
    req: &Request<'_>,
    body: &Bytes,
    mut each: impl FnMut(Bytes) -> Result<(), Status>,
) -> Result<(), Status> {
    let mut stream = std::future::poll_fn(|cx| client.poll_open(cx, req, body)).await?;
    let mut chunks = Vec::new();
    let mut frames = Frames::default();
    loop {
        let end = std::future::poll_fn(|cx| stream.poll_next(cx, &mut chunks)).await;
        for chunk in chunks.drain(..) {
            frames.push(chunk);
            while let Some(message) = frames.next()? {
                each(message)?;
            }
        }
        if let Some(end) = end {
            end?;
            if !frames.is_empty() {
                return Err(Status::internal("the answer ended inside a message"));
            }
            return Ok(());
        }
    }
}

/// Like [`call`], for exactly one answer message.
pub async fn unary(client: &Client, req: &Request<'_>, body: &Bytes) -> Result<Bytes, Status> {
    let mut answer = None;
    call(client, req, body, |message| {
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
    /// Moves a frame held whole into the buffer, for more bytes to join it.
    fn keep_whole(&mut self) {
        if let Some(whole) = self.whole.take() {
            self.buffer.extend_from_slice(&whole);
        }
    }

    fn push(&mut self, data: Bytes) {
        self.keep_whole();
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
            self.keep_whole();
            return Ok(None);
        }
        if available[0] != 0 {
            return Err(Status::internal(
                "the answer is compressed, which this client did not ask for",
            ));
        }
        let len =
            u32::from_be_bytes([available[1], available[2], available[3], available[4]]) as usize;
        if len > MAX_MESSAGE {
            return Err(Status::resource_exhausted(format!(
                "an answer of {len} bytes is over this client's limit of {MAX_MESSAGE}"
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

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
    fn a_message_is_framed_with_its_length() {
        let request = fanout_proto::v1::FetchRequest {
            query: "q".into(),
            ..Default::default()
        };
        assert_eq!(&frame(&request)[..], b"\x00\x00\x00\x00\x03\x0a\x01\x71");
    }
}
