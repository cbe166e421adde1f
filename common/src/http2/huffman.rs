//! The Huffman code of HPACK (RFC 7541 §5.2 and Appendix B), for string literals.
//!
//! The code is canonical: within one code length the codes are consecutive in symbol order,
//! and each length's first code follows the previous length's last. So the code is given by
//! which symbols have which length ([`GROUPS`]); the codes are computed from that, and the
//! tests check them against the RFC's table, its examples and an independent decoder.
//!
//! Decoding walks the code tree four bits at a time through a table built once: 256 states
//! (the tree's inner nodes) × 16 nibbles, each step naming the next state and the symbol it
//! completes, if any (every code is at least five bits long, so a nibble completes at most one).

use std::sync::LazyLock;

/// Code lengths: (length, the printable ASCII symbols of that length, the other symbols).
/// Symbol 256 is the end-of-string code.
const GROUPS: &[(u8, &[u8], &[u16])] = &[
    (5, b"012aceiost", &[]),
    (6, b" %-./3456789=A_bdfghlmnpru", &[]),
    (7, b":BCDEFGHIJKLMNOPQRSTUVWYjkqvwxyz", &[]),
    (8, b"&*,;XZ", &[]),
    (10, b"!\"()?", &[]),
    (11, b"'+|", &[]),
    (12, b"#>", &[]),
    (13, b"$@[]~", &[0]),
    (14, b"^}", &[]),
    (15, b"<`{", &[]),
    (19, b"\\", &[195, 208]),
    (20, b"", &[128, 130, 131, 162, 184, 194, 224, 226]),
    (
        21,
        b"",
        &[
            153, 161, 167, 172, 176, 177, 179, 209, 216, 217, 227, 229, 230,
        ],
    ),
    (
        22,
        b"",
        &[
            129, 132, 133, 134, 136, 146, 154, 156, 160, 163, 164, 169, 170, 173, 178, 181, 185,
            186, 187, 189, 190, 196, 198, 228, 232, 233,
        ],
    ),
    (
        23,
        b"",
        &[
            1, 135, 137, 138, 139, 140, 141, 143, 147, 149, 150, 151, 152, 155, 157, 158, 165, 166,
            168, 174, 175, 180, 182, 183, 188, 191, 197, 231, 239,
        ],
    ),
    (
        24,
        b"",
        &[9, 142, 144, 145, 148, 159, 171, 206, 215, 225, 236, 237],
    ),
    (25, b"", &[199, 207, 234, 235]),
    (
        26,
        b"",
        &[
            192, 193, 200, 201, 202, 205, 210, 213, 218, 219, 238, 240, 242, 243, 255,
        ],
    ),
    (
        27,
        b"",
        &[
            203, 204, 211, 212, 214, 221, 222, 223, 241, 244, 245, 246, 247, 248, 250, 251, 252,
            253, 254,
        ],
    ),
    (
        28,
        b"",
        &[
            2, 3, 4, 5, 6, 7, 8, 11, 12, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 26, 27, 28,
            29, 30, 31, 127, 220, 249,
        ],
    ),
    (30, b"", &[10, 13, 22, 256]),
];

const EOS: u16 = 256;

/// Why a Huffman-coded string could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The end-of-string code appeared inside the string.
    Eos,
    /// The string ended in padding longer than 7 bits, or not made of the end-of-string code's
    /// leading ones.
    Padding,
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Error::Eos => "a Huffman-coded string holds the end-of-string code",
            Error::Padding => "a Huffman-coded string ends in invalid padding",
        })
    }
}

/// One step of the decoder: from a state, over one nibble.
#[derive(Clone, Copy, Default)]
struct Step {
    next: u8,
    symbol: u8,
    flags: u8,
}

const EMITS: u8 = 1;
const FAILS: u8 = 2;

struct Code {
    /// `steps[state * 16 + nibble]`.
    steps: Vec<Step>,
    /// Per state: whether a string may end there (the bits since the last symbol are at most
    /// seven ones).
    may_end: Vec<bool>,
}

static CODE: LazyLock<Code> = LazyLock::new(build);

fn symbols_by_length() -> Vec<(u8, u16)> {
    let mut all = Vec::with_capacity(257);
    for (len, ascii, other) in GROUPS {
        all.extend(ascii.iter().map(|&b| (*len, u16::from(b))));
        all.extend(other.iter().map(|&s| (*len, s)));
    }
    all.sort_unstable();
    all
}

/// Per symbol: its code, right-aligned, and the code's length in bits.
fn canonical_codes() -> [(u32, u8); 257] {
    let mut codes = [(0u32, 0u8); 257];
    let mut next = 0u32;
    let mut prev_len = 0u8;
    for (len, sym) in symbols_by_length() {
        if prev_len != 0 {
            next = (next + 1) << (len - prev_len);
        }
        codes[usize::from(sym)] = (next, len);
        prev_len = len;
    }
    codes
}

fn build() -> Code {
    let codes = canonical_codes();

    // The code tree: inner nodes numbered from 0 (the root); a child is an inner node or a
    // leaf (LEAF | symbol).
    const LEAF: u16 = 0x8000;
    const NONE: u16 = u16::MAX;
    let mut children: Vec<[u16; 2]> = vec![[NONE, NONE]];
    // Per inner node: how many ones lead to it from the root, if only ones do.
    let mut ones: Vec<Option<u8>> = vec![Some(0)];
    for (sym, &(code, len)) in codes.iter().enumerate() {
        let mut node = 0usize;
        for i in (0..len).rev() {
            let bit = ((code >> i) & 1) as usize;
            if i == 0 {
                children[node][bit] = LEAF | sym as u16;
            } else {
                if children[node][bit] == NONE {
                    children.push([NONE, NONE]);
                    ones.push(match (ones[node], bit) {
                        (Some(n), 1) => Some(n + 1),
                        _ => None,
                    });
                    children[node][bit] = (children.len() - 1) as u16;
                }
                node = usize::from(children[node][bit]);
            }
        }
    }
    assert_eq!(children.len(), 256, "a complete code of 257 symbols");

    let mut steps = vec![Step::default(); 256 * 16];
    for state in 0..256usize {
        for nibble in 0..16u8 {
            let mut node = state;
            let mut step = Step::default();
            for i in (0..4).rev() {
                let child = children[node][usize::from((nibble >> i) & 1)];
                if child & LEAF != 0 {
                    let sym = child & !LEAF;
                    if sym == EOS {
                        step.flags |= FAILS;
                        break;
                    }
                    step.symbol = sym as u8;
                    step.flags |= EMITS;
                    node = 0;
                } else {
                    node = usize::from(child);
                }
            }
            step.next = node as u8;
            steps[state * 16 + usize::from(nibble)] = step;
        }
    }
    let may_end = ones.iter().map(|o| o.is_some_and(|n| n <= 7)).collect();
    Code { steps, may_end }
}

/// Appends the decoding of `src` to `dst`.
pub fn decode(src: &[u8], dst: &mut Vec<u8>) -> Result<(), Error> {
    let code = &*CODE;
    dst.reserve(src.len() * 8 / 5 + 1);
    let mut state = 0usize;
    for &byte in src {
        for nibble in [byte >> 4, byte & 0xf] {
            let step = code.steps[state * 16 + usize::from(nibble)];
            if step.flags & FAILS != 0 {
                return Err(Error::Eos);
            }
            if step.flags & EMITS != 0 {
                dst.push(step.symbol);
            }
            state = usize::from(step.next);
        }
    }
    if code.may_end[state] {
        Ok(())
    } else {
        Err(Error::Padding)
    }
}

/// Appends the encoding of `src` to `dst`, padded with ones. (The encoder sends raw literals;
/// this is for the tests, which check the table by round trips.)
#[cfg(test)]
fn encode(src: &[u8], dst: &mut Vec<u8>) {
    let codes = canonical_codes();
    let mut bits: u64 = 0;
    let mut n = 0u32;
    for &b in src {
        let (c, len) = codes[usize::from(b)];
        bits = (bits << len) | u64::from(c);
        n += u32::from(len);
        while n >= 8 {
            n -= 8;
            dst.push((bits >> n) as u8);
        }
    }
    if n > 0 {
        dst.push(((bits << (8 - n)) | (0xff >> n)) as u8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::http2::test_hex as hex;

    #[test]
    fn every_symbol_has_one_length_and_the_code_is_complete() {
        let all = symbols_by_length();
        let mut seen = [0; 257];
        for (_, s) in &all {
            seen[usize::from(*s)] += 1;
        }
        assert!(seen.iter().all(|&n| n == 1), "{seen:?}");
        // Kraft: a complete prefix code fills the code space exactly.
        let space: u64 = all.iter().map(|(len, _)| 1u64 << (30 - len)).sum();
        assert_eq!(space, 1 << 30);
    }

    #[test]
    fn codes_match_the_rfc_table() {
        // Entries of RFC 7541 Appendix B: (symbol, code, length).
        for (sym, c, len) in [
            (0, 0x1ff8, 13),
            (1, 0x7fffd8, 23),
            (2, 0xfffffe2, 28),
            (9, 0xffffea, 24),
            (10, 0x3ffffffc, 30),
            (22, 0x3ffffffe, 30),
            (26, 0xffffff6, 28),
            (b' ' as usize, 0x14, 6),
            (b':' as usize, 0x5c, 7),
            (b'&' as usize, 0xf8, 8),
            (b'0' as usize, 0x0, 5),
            (b't' as usize, 0x9, 5),
            (256, 0x3fffffff, 30),
        ] {
            assert_eq!(canonical_codes()[sym], (c, len), "symbol {sym}");
        }
    }

    #[test]
    fn rfc_examples_decode() {
        // RFC 7541 Appendix C.4 and C.6.
        for (coded, plain) in [
            ("f1e3 c2e5 f23a 6ba0 ab90 f4ff", "www.example.com"),
            ("a8eb 1064 9cbf", "no-cache"),
            ("25a8 49e9 5ba9 7d7f", "custom-key"),
            ("25a8 49e9 5bb8 e8b4 bf", "custom-value"),
            ("6402", "302"),
            ("aec3 771a 4b", "private"),
            ("9bd9 ab", "gzip"),
        ] {
            let mut out = Vec::new();
            decode(&hex(coded), &mut out).unwrap();
            assert_eq!(out, plain.as_bytes(), "{plain}");
            let mut again = Vec::new();
            encode(plain.as_bytes(), &mut again);
            assert_eq!(again, hex(coded), "{plain}");
        }
    }

    #[test]
    fn every_byte_round_trips_and_agrees_with_another_decoder() {
        let all: Vec<u8> = (0..=255).collect();
        for chunk in [&all[..], b"", b"a", b"0123456789.ms"] {
            let mut coded = Vec::new();
            encode(chunk, &mut coded);
            let mut back = Vec::new();
            decode(&coded, &mut back).unwrap();
            assert_eq!(back, chunk);
            // loona-hpack has its own copy of the RFC's table.
            let theirs = loona_hpack::huffman::HuffmanDecoder::new()
                .decode(&coded)
                .unwrap();
            assert_eq!(theirs, chunk);
        }
        for b in 0..=255u8 {
            let mut coded = Vec::new();
            encode(&[b], &mut coded);
            let theirs = loona_hpack::huffman::HuffmanDecoder::new()
                .decode(&coded)
                .unwrap();
            assert_eq!(theirs, [b], "byte {b}");
        }
    }

    #[test]
    fn bad_strings_are_refused() {
        // EOS inside the string: 30 ones, then more.
        assert_eq!(
            decode(&[0xff, 0xff, 0xff, 0xff, 0x00], &mut Vec::new()),
            Err(Error::Eos)
        );
        // Padding of 8 ones (a whole byte).
        let mut coded = Vec::new();
        encode(b"a", &mut coded);
        coded.push(0xff);
        assert_eq!(decode(&coded, &mut Vec::new()), Err(Error::Padding));
        // Padding with a zero in it: 'a' is 00011, then 001 instead of 111.
        assert_eq!(decode(&[0b0001_1001], &mut Vec::new()), Err(Error::Padding));
    }
}
