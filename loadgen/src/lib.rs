//! `loadgen`: measures fanout under load, against theory.
//!
//! The parts, split the way the oha load generator splits them, data flowing one way through
//! the records of [`model`]:
//! - [`cli`]: the flags, turned into [`model`] values;
//! - [`target`]: the server under load: connecting, and the checks before a run;
//! - [`workers`]: the callers (closed loop, or open loop at a rate with coordinated-omission
//!   correction), each with its own statistics;
//! - [`conn`] and [`grpc`]: the calls, gRPC over `h2` connections;
//! - [`stats`]: HDR histograms and status counts, merged at the end;
//! - [`theory`]: the bound each configuration is held against (Little's law and friends);
//! - [`report`]: the table and the JSON;
//! - [`chart`]: the SVG chart of `compare`;
//! - [`monitor`]: the live progress line;
//! - [`deploy`]: the local deployment started when no `--target` is given.
//!
//! [`run()`] is one scenario, [`compare()`] the matrix.
#![forbid(unsafe_code)]

pub mod chart;
pub mod cli;
pub mod compare;
pub mod conn;
pub mod deploy;
pub mod grpc;
pub mod model;
pub mod monitor;
pub mod report;
pub mod run;
pub mod stats;
pub mod target;
pub mod theory;
pub mod workers;

pub use crate::compare::compare;
pub use crate::run::run;
