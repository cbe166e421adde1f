//! A lean HTTP/2 client for gRPC calls, written for this workspace: the loadgen's load and the
//! aggregator's backend calls go through it.
//!
//! Why not the `h2` crate (under hyper and tonic), which the clients used before: a call's CPU
//! on the client side is what the two benchmark targets measure (the loadgen against h2load,
//! the aggregator's cost per backend call), and `h2` is general: per-stream state machines,
//! priorities, generic bodies, a `HeaderMap` per request and per answer. Profiles of the
//! loadgen put half of its CPU in `h2`, `http`, `bytes` and the allocations they make. This
//! client does what a gRPC client needs and no more: requests are a handful of headers the
//! encoder sends as table indexes after the first call, answers are decoded for `:status` and
//! `grpc-status` only, and callers' frames gather in one buffer that one write sends.
//! BENCHMARKS.md §2 and §3 give the figures.
//!
//! - [`conn`]: the connection: [`connect`] (TCP), [`handshake`], [`Client`], [`Driver`].
//! - [`hpack`]: header compression (RFC 7541).
//! - [`huffman`]: HPACK's Huffman code.

pub mod conn;
pub mod hpack;
pub mod huffman;

pub use conn::{Call, Client, Driver, Request, connect, handshake};

/// `"f1e3 c2e5"` as bytes: the RFCs write their examples in hex.
#[cfg(test)]
fn test_hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}
