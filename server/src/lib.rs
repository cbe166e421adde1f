//! How both fanout servers (`backend` and `aggregator`) run, so that both follow the same
//! conventions and neither copies the other.
//!
//! - [`serve`]: a tonic server on a listener with health, reflection (v1 and v1alpha),
//!   `x-process-time`, a span per call, TLS when configured, and a graceful drain when the
//!   shutdown future fires.
//! - [`limits`]: what one connection may do (HTTP/2 limits, keepalive, handshake and
//!   first-request timeouts), tuned so a caller cancelling calls after a stall is no attack.
//! - [`accept`]: the connections tonic serves: TLS handshakes concurrent and bounded.
//! - [`conn`]: one connection's peer, and its first-request timeout.
//! - [`shutdown`]: one future for SIGINT and SIGTERM.
//! - [`counters`]: the call counters behind the `Stats` RPC, and the guard that keeps them.
//! - [`lag`]: the runtime-lag monitor (asyncio's debug mode, for tokio).
//! - [`metrics`]: the Prometheus registry, call-duration histograms and the `/metrics` endpoint.
//! - [`process_time`]: the tower layer that adds `x-process-time` and logs each call.
//! - [`deadline`]: the caller's `grpc-timeout`.
//! - [`thread`]: a server on a runtime of its own, with its own worker count, on a thread (tests
//!   and the loadgen's local deployment).
#![forbid(unsafe_code)]

pub mod accept;
pub mod conn;
pub mod counters;
pub mod deadline;
pub mod lag;
pub mod limits;
pub mod metrics;
pub mod process_time;
pub mod serve;
pub mod shutdown;
pub mod thread;

pub use counters::{CallGuard, Counters};
pub use limits::{ConnLimits, ConnLimitsArgs};
pub use serve::{ServeError, Server};
