//! What the two servers (`backend` and `aggregator`) share, so that both follow the same
//! conventions and neither copies the other.
//!
//! - [`serve`]: run a tonic server on a listener with health, reflection (v1 and v1alpha),
//!   `x-process-time`, and a graceful drain when the shutdown future fires.
//! - [`counters`]: the call counters behind the `Stats` RPC, and the guard that keeps them.
//! - [`lag`]: the runtime-lag monitor (asyncio's debug mode, for tokio).
//! - [`process_time`]: the tower layer that adds `x-process-time` and logs each call.
//! - [`shutdown`]: one future for SIGINT and SIGTERM.
//! - [`thread`]: start a server on a runtime of its own, with its own worker count, on a thread
//!   (tests and the loadgen's local deployment).
//! - [`telemetry`]: logs (`RUST_LOG`, text or JSON) and OTLP trace export.
//! - [`propagation`]: W3C trace context in and out of gRPC metadata; the server span of a call.
//! - [`deadline`]: the caller's `grpc-timeout`.
//! - [`http2`]: a lean HTTP/2 client made for gRPC, and [`grpc`]: unary and server-streaming
//!   calls over it (the aggregator's backend calls and the loadgen's load).
//! - [`cli`]: flag parsers shared by the binaries (human durations).
#![forbid(unsafe_code)]

pub mod cli;
pub mod counters;
pub mod deadline;
pub mod grpc;
pub mod http2;
pub mod lag;
pub mod process_time;
pub mod propagation;
pub mod serve;
pub mod shutdown;
pub mod telemetry;
pub mod thread;
pub mod timer;

pub use counters::{CallGuard, Counters};
pub use serve::{ServeError, Server};
