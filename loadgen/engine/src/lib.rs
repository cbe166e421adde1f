//! The loadgen's load engine and reports, the way the oha load generator splits them, data
//! flowing one way through the records of [`model`]:
//! - [`target`]: the server under load: connecting, and the checks before a run;
//! - [`workers`]: the load: a closed loop of callers, or [`open_loop`]'s dispatchers sending
//!   calls on a schedule (coordinated-omission corrected, dropping rather than delaying what
//!   the cap on calls outstanding does not allow);
//! - [`caller`]: one kind of call over one connection, and what a call came to;
//! - [`stats`]: HDR histograms and status counts, one set per worker thread, added up at the
//!   end, and their portable form in reports;
//! - [`endpoints`]: each replica's share, from the aggregator's Stats around the window;
//! - [`report`]: the table and the JSON; [`monitor`]: the live progress line;
//! - [`bound`]: what a configuration's throughput is held against (the theory itself, which
//!   knows the servers' latency models, is the `loadgen` crate's).
//!
//! The calls go over [`loadgen_client`]'s connections; the experiments and the local
//! deployments that link the servers are the `loadgen` crate's.
#![forbid(unsafe_code)]

pub mod bound;
pub mod caller;
pub mod endpoints;
pub mod model;
pub mod monitor;
pub mod open_loop;
pub mod report;
pub mod stats;
pub mod target;
pub mod workers;

pub use loadgen_client::{conn, grpc};
