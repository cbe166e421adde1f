//! The loadgen's gRPC client: [`conn`], HTTP/2 connections on the `h2` crate (the HTTP/2
//! implementation under hyper and tonic) and the calls made over them, and [`grpc`], what gRPC
//! adds to HTTP/2 (message framing, statuses, the errors that mean a call was never processed).
//!
//! This is the one place the loadgen's protocol details live, and the one exception to using
//! tonic's client: a load generator's own CPU per call is the floor of every figure it
//! measures (BENCHMARKS.md §3). It behaves as a gRPC client towards servers nobody here wrote:
//! it opens streams within the server's limit and sends refused ones again, answers pings and
//! sends none, and opens a connection again when a GOAWAY ends it
//! (`loadgen/tests/it/grpcio.rs` holds it to that against grpcio, gRPC's C core, and
//! `conn.rs` and `refused_streams.rs` there against tonic and a scripted h2 server).
#![forbid(unsafe_code)]

pub mod conn;
mod dial;
pub mod grpc;
mod prepared;
mod task;
