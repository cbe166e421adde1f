//! HPACK (RFC 7541), the header compression of HTTP/2: a full decoder for what servers send,
//! and an encoder for the few headers a gRPC client sends.
//!
//! The encoder puts each header the client repeats (path, authority, content type) in the
//! dynamic table the first time, so later requests send it as one byte and the server decodes
//! it without parsing; headers that change per call (`grpc-timeout`, trace context) go as
//! literals that name a table entry. Strings go out without Huffman coding: it would cost the
//! client CPU to save bytes on loopback. Decoding handles every representation, Huffman
//! coding, the dynamic table and its size updates.

use std::collections::VecDeque;

use bytes::{BufMut, Bytes, BytesMut};

use super::huffman;

/// The size of the dynamic table this end decodes with: the protocol's default, never changed
/// by our SETTINGS.
pub const DECODER_TABLE_SIZE: usize = 4096;

/// What is wrong with a header block (a connection error: COMPRESSION_ERROR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(pub &'static str);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "bad header block: {}", self.0)
    }
}

/// RFC 7541 Appendix A.
const STATIC: [(&[u8], &[u8]); 61] = [
    (b":authority", b""),
    (b":method", b"GET"),
    (b":method", b"POST"),
    (b":path", b"/"),
    (b":path", b"/index.html"),
    (b":scheme", b"http"),
    (b":scheme", b"https"),
    (b":status", b"200"),
    (b":status", b"204"),
    (b":status", b"206"),
    (b":status", b"304"),
    (b":status", b"400"),
    (b":status", b"404"),
    (b":status", b"500"),
    (b"accept-charset", b""),
    (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""),
    (b"accept-ranges", b""),
    (b"accept", b""),
    (b"access-control-allow-origin", b""),
    (b"age", b""),
    (b"allow", b""),
    (b"authorization", b""),
    (b"cache-control", b""),
    (b"content-disposition", b""),
    (b"content-encoding", b""),
    (b"content-language", b""),
    (b"content-length", b""),
    (b"content-location", b""),
    (b"content-range", b""),
    (b"content-type", b""),
    (b"cookie", b""),
    (b"date", b""),
    (b"etag", b""),
    (b"expect", b""),
    (b"expires", b""),
    (b"from", b""),
    (b"host", b""),
    (b"if-match", b""),
    (b"if-modified-since", b""),
    (b"if-none-match", b""),
    (b"if-range", b""),
    (b"if-unmodified-since", b""),
    (b"last-modified", b""),
    (b"link", b""),
    (b"location", b""),
    (b"max-forwards", b""),
    (b"proxy-authenticate", b""),
    (b"proxy-authorization", b""),
    (b"range", b""),
    (b"referer", b""),
    (b"refresh", b""),
    (b"retry-after", b""),
    (b"server", b""),
    (b"set-cookie", b""),
    (b"strict-transport-security", b""),
    (b"transfer-encoding", b""),
    (b"user-agent", b""),
    (b"vary", b""),
    (b"via", b""),
    (b"www-authenticate", b""),
];

/// An entry's size for the table's accounting (RFC 7541 §4.1).
fn entry_size(name: &[u8], value: &[u8]) -> usize {
    name.len() + value.len() + 32
}

/// A dynamic table: newest entry first.
#[derive(Debug, Default)]
struct Table {
    entries: VecDeque<(Bytes, Bytes)>,
    size: usize,
    max: usize,
}

impl Table {
    fn new(max: usize) -> Self {
        Table {
            max,
            ..Table::default()
        }
    }

    fn set_max(&mut self, max: usize) {
        self.max = max;
        self.evict(0);
    }

    /// Drops the oldest entries until `room` more bytes fit.
    fn evict(&mut self, room: usize) {
        while self.size + room > self.max {
            let Some((n, v)) = self.entries.pop_back() else {
                break;
            };
            self.size -= entry_size(&n, &v);
        }
    }

    fn insert(&mut self, name: Bytes, value: Bytes) {
        let size = entry_size(&name, &value);
        if size > self.max {
            // An entry larger than the table empties it (RFC 7541 §4.4).
            self.entries.clear();
            self.size = 0;
            return;
        }
        self.evict(size);
        self.size += size;
        self.entries.push_front((name, value));
    }
}

/// Reads an integer with an `n`-bit prefix from `buf[*at..]` (RFC 7541 §5.1).
fn read_int(buf: &[u8], at: &mut usize, n: u8) -> Result<usize, Error> {
    let mask = (1usize << n) - 1;
    let first = *buf.get(*at).ok_or(Error("truncated integer"))?;
    *at += 1;
    let mut value = usize::from(first) & mask;
    if value < mask {
        return Ok(value);
    }
    let mut shift = 0;
    loop {
        let b = *buf.get(*at).ok_or(Error("truncated integer"))?;
        *at += 1;
        if shift > 28 {
            return Err(Error("integer too large"));
        }
        value += usize::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
}

/// Writes `value` with an `n`-bit prefix, the prefix's high bits set to `flags`.
fn write_int(dst: &mut BytesMut, flags: u8, n: u8, mut value: usize) {
    let mask = (1usize << n) - 1;
    if value < mask {
        dst.put_u8(flags | value as u8);
        return;
    }
    dst.put_u8(flags | mask as u8);
    value -= mask;
    while value >= 0x80 {
        dst.put_u8((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    dst.put_u8(value as u8);
}

/// Reads a string literal into `out` (cleared first), decoding Huffman coding.
fn read_string(buf: &[u8], at: &mut usize, out: &mut Vec<u8>) -> Result<(), Error> {
    out.clear();
    let huffman = *buf.get(*at).ok_or(Error("truncated string"))? & 0x80 != 0;
    let len = read_int(buf, at, 7)?;
    let raw = buf
        .get(*at..*at + len)
        .ok_or(Error("string longer than the block"))?;
    *at += len;
    if huffman {
        huffman::decode(raw, out).map_err(|e| match e {
            huffman::Error::Eos => Error("Huffman string holds EOS"),
            huffman::Error::Padding => Error("Huffman string badly padded"),
        })
    } else {
        out.extend_from_slice(raw);
        Ok(())
    }
}

/// Decodes header blocks, keeping the dynamic table between them.
#[derive(Debug)]
pub struct Decoder {
    table: Table,
    name: Vec<u8>,
    value: Vec<u8>,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            table: Table::new(DECODER_TABLE_SIZE),
            name: Vec::new(),
            value: Vec::new(),
        }
    }
}

impl Decoder {
    fn entry(&self, index: usize) -> Result<(&[u8], &[u8]), Error> {
        match index {
            0 => Err(Error("index 0")),
            1..=61 => Ok(STATIC[index - 1]),
            _ => self
                .table
                .entries
                .get(index - 62)
                .map(|(n, v)| (&n[..], &v[..]))
                .ok_or(Error("index past the dynamic table")),
        }
    }

    /// Decodes one whole header block (HEADERS and its CONTINUATIONs), handing each field to
    /// `each` in order.
    pub fn decode(
        &mut self,
        block: &[u8],
        mut each: impl FnMut(&[u8], &[u8]),
    ) -> Result<(), Error> {
        let mut at = 0;
        let mut fields = false;
        while at < block.len() {
            let first = block[at];
            if first & 0x80 != 0 {
                // Indexed field.
                let index = read_int(block, &mut at, 7)?;
                let (n, v) = self.entry(index)?;
                each(n, v);
                fields = true;
            } else if first & 0xe0 == 0x20 {
                // Dynamic table size update: only before the first field.
                let max = read_int(block, &mut at, 5)?;
                if fields {
                    return Err(Error("table size update after a field"));
                }
                if max > DECODER_TABLE_SIZE {
                    return Err(Error("table size update over the SETTINGS limit"));
                }
                self.table.set_max(max);
            } else {
                // A literal: with incremental indexing (01), without (0000) or never (0001).
                let indexing = first & 0xc0 == 0x40;
                let prefix = if indexing { 6 } else { 4 };
                let index = read_int(block, &mut at, prefix)?;
                let mut name = std::mem::take(&mut self.name);
                if index == 0 {
                    read_string(block, &mut at, &mut name)?;
                } else {
                    name.clear();
                    name.extend_from_slice(self.entry(index)?.0);
                }
                let mut value = std::mem::take(&mut self.value);
                let read = read_string(block, &mut at, &mut value);
                self.name = name;
                self.value = value;
                read?;
                each(&self.name, &self.value);
                if indexing {
                    self.table.insert(
                        Bytes::copy_from_slice(&self.name),
                        Bytes::copy_from_slice(&self.value),
                    );
                }
                fields = true;
            }
        }
        Ok(())
    }
}

/// How the encoder sends one header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Repeated from request to request: put in the table once, then sent as an index.
    Repeated,
    /// A new value each time: a literal, naming the header by a table entry where it can.
    Varying,
}

/// Encodes request header blocks. Its table mirrors the one the server decodes with.
#[derive(Debug)]
pub struct Encoder {
    table: Table,
    /// A size update owed at the start of the next block.
    update: Option<usize>,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            table: Table::new(DECODER_TABLE_SIZE),
            update: None,
        }
    }
}

/// A static-table match: the index of the exact field, or of the name.
fn static_index(name: &[u8], value: &[u8]) -> (Option<usize>, Option<usize>) {
    match name {
        b":authority" => (None, Some(1)),
        b":method" => match value {
            b"GET" => (Some(2), Some(2)),
            b"POST" => (Some(3), Some(3)),
            _ => (None, Some(2)),
        },
        b":path" => match value {
            b"/" => (Some(4), Some(4)),
            _ => (None, Some(4)),
        },
        b":scheme" => match value {
            b"http" => (Some(6), Some(6)),
            b"https" => (Some(7), Some(7)),
            _ => (None, Some(6)),
        },
        b"content-type" => (None, Some(31)),
        b"user-agent" => (None, Some(58)),
        _ => (None, None),
    }
}

impl Encoder {
    /// The peer's SETTINGS_HEADER_TABLE_SIZE changed: the table may not grow past it. A smaller
    /// limit is announced at the start of the next block.
    pub fn set_allowed(&mut self, allowed: usize) {
        let max = allowed.min(DECODER_TABLE_SIZE);
        if max != self.table.max {
            self.table.set_max(max);
            self.update = Some(max);
        }
    }

    /// Starts a block: the size update owed, if any.
    pub fn begin(&mut self, dst: &mut BytesMut) {
        if let Some(max) = self.update.take() {
            write_int(dst, 0x20, 5, max);
        }
    }

    /// Appends one field to the block being written.
    pub fn field(&mut self, dst: &mut BytesMut, name: &[u8], value: &[u8], kind: Kind) {
        let (exact, static_name) = static_index(name, value);
        if let Some(i) = exact {
            write_int(dst, 0x80, 7, i);
            return;
        }
        let mut dynamic_name = None;
        for (i, (n, v)) in self.table.entries.iter().enumerate() {
            if &n[..] == name {
                if kind == Kind::Repeated && &v[..] == value {
                    write_int(dst, 0x80, 7, 62 + i);
                    return;
                }
                dynamic_name.get_or_insert(62 + i);
            }
        }
        let name_index = static_name.or(dynamic_name);
        // Index it if it repeats, or to give a varying header's name an index.
        let insert = kind == Kind::Repeated || name_index.is_none();
        let fits = entry_size(name, value) <= self.table.max;
        let (flags, prefix) = if insert && fits { (0x40, 6) } else { (0x00, 4) };
        match name_index {
            Some(i) => write_int(dst, flags, prefix, i),
            None => {
                write_int(dst, flags, prefix, 0);
                write_int(dst, 0, 7, name.len());
                dst.put_slice(name);
            }
        }
        write_int(dst, 0, 7, value.len());
        dst.put_slice(value);
        if insert && fits {
            self.table
                .insert(Bytes::copy_from_slice(name), Bytes::copy_from_slice(value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http2::test_hex as hex;

    fn decode(d: &mut Decoder, block: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let mut out = Vec::new();
        d.decode(block, |n, v| {
            out.push((
                String::from_utf8_lossy(n).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            ))
        })?;
        Ok(out)
    }

    fn fields(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn integers_round_trip_at_every_prefix() {
        for n in 1..=8u8 {
            for value in [0, 1, 30, 31, 127, 128, 255, 1337, 65535, 1 << 24] {
                let mut b = BytesMut::new();
                write_int(&mut b, 0, n, value);
                let mut at = 0;
                assert_eq!(read_int(&b, &mut at, n).unwrap(), value, "{value} /{n}");
                assert_eq!(at, b.len());
            }
        }
        // RFC 7541 C.1.2: 1337 with a 5-bit prefix.
        let mut b = BytesMut::new();
        write_int(&mut b, 0, 5, 1337);
        assert_eq!(&b[..], &[0x1f, 0x9a, 0x0a]);
        let mut at = 0;
        assert!(read_int(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01], &mut at, 7).is_err());
    }

    #[test]
    fn rfc_requests_with_huffman_decode_in_sequence() {
        // RFC 7541 C.4: three requests on one connection, sharing the dynamic table.
        let mut d = Decoder::default();
        assert_eq!(
            decode(&mut d, &hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap(),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com")
            ])
        );
        assert_eq!(d.table.size, 57);
        assert_eq!(
            decode(&mut d, &hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap(),
            fields(&[
                (":method", "GET"),
                (":scheme", "http"),
                (":path", "/"),
                (":authority", "www.example.com"),
                ("cache-control", "no-cache")
            ])
        );
        assert_eq!(d.table.size, 110);
        assert_eq!(
            decode(
                &mut d,
                &hex("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf")
            )
            .unwrap(),
            fields(&[
                (":method", "GET"),
                (":scheme", "https"),
                (":path", "/index.html"),
                (":authority", "www.example.com"),
                ("custom-key", "custom-value")
            ])
        );
        assert_eq!(d.table.size, 164);
    }

    #[test]
    fn the_table_evicts_and_obeys_size_updates() {
        let mut d = Decoder::default();
        // A size update to 60 bytes, then two entries of 32 + 2 + 1 = 35 bytes each: the
        // second evicts the first.
        let mut b = BytesMut::new();
        write_int(&mut b, 0x20, 5, 60);
        for v in [b"1", b"2"] {
            b.put_slice(&[0x40, 2, b'a', b'b', 1]);
            b.put_slice(v);
        }
        decode(&mut d, &b).unwrap();
        assert_eq!(d.table.entries.len(), 1);
        assert_eq!(decode(&mut d, &[0xbe]).unwrap(), fields(&[("ab", "2")]));
        assert_eq!(
            decode(&mut d, &[0xbf]),
            Err(Error("index past the dynamic table"))
        );
        assert!(decode(&mut d, &[0x80]).is_err(), "index 0");
        // A size update after a field, or over the limit.
        assert!(decode(&mut d, &[0x82, 0x20]).is_err());
        let mut big = BytesMut::new();
        write_int(&mut big, 0x20, 5, 5000);
        assert!(decode(&mut d, &big).is_err());
        // Truncated blocks.
        assert!(decode(&mut d, &[0x40, 5, b'a']).is_err());
    }

    #[test]
    fn what_the_encoder_writes_decodes_to_the_same_fields() {
        let mut e = Encoder::default();
        let mut d = Decoder::default();
        let request = |e: &mut Encoder, timeout: &str| {
            let mut b = BytesMut::new();
            e.begin(&mut b);
            e.field(&mut b, b":method", b"POST", Kind::Repeated);
            e.field(&mut b, b":scheme", b"http", Kind::Repeated);
            e.field(
                &mut b,
                b":path",
                b"/fanout.v1.Backend/Fetch",
                Kind::Repeated,
            );
            e.field(&mut b, b":authority", b"127.0.0.1:50051", Kind::Repeated);
            e.field(&mut b, b"content-type", b"application/grpc", Kind::Repeated);
            e.field(&mut b, b"te", b"trailers", Kind::Repeated);
            e.field(&mut b, b"grpc-timeout", timeout.as_bytes(), Kind::Varying);
            b
        };
        let want = |timeout: &str| {
            fields(&[
                (":method", "POST"),
                (":scheme", "http"),
                (":path", "/fanout.v1.Backend/Fetch"),
                (":authority", "127.0.0.1:50051"),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                ("grpc-timeout", timeout),
            ])
        };
        let first = request(&mut e, "100m");
        assert_eq!(decode(&mut d, &first).unwrap(), want("100m"));
        let second = request(&mut e, "99999u");
        assert_eq!(decode(&mut d, &second).unwrap(), want("99999u"));
        // The second time, every repeated field is one byte and the timeout names its entry
        // (a two-byte index, then the value's length and the value).
        assert_eq!(second.len(), 6 + 2 + 1 + 6, "{second:?}");
        // A smaller table announced by the peer: a size update, then everything anew.
        e.set_allowed(0);
        let third = request(&mut e, "1S");
        assert_eq!(third[0], 0x20);
        assert_eq!(decode(&mut d, &third).unwrap(), want("1S"));
        assert_eq!(d.table.entries.len(), 0);
    }
}
