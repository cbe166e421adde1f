//! `loadgen`: measures fanout under load, against theory.
//!
//! The parts, split the way the oha load generator splits them, data flowing one way through
//! the records of [`model`]:
//! - [`cli`]: the flags, turned into [`model`] values;
//! - [`target`]: the server under load: connecting, and the checks before a run;
//! - [`workers`]: the load: a closed loop of callers, or [`open_loop`]'s dispatchers sending
//!   calls on a schedule (coordinated-omission corrected, dropping rather than delaying what
//!   the cap on calls outstanding does not allow);
//! - [`caller`]: one kind of call over one connection, and what a call came to;
//! - [`conn`] and [`grpc`]: the calls, gRPC over `h2` connections;
//! - [`stats`]: HDR histograms and status counts, one set per worker thread, added up at the
//!   end, and their portable form in reports;
//! - [`endpoints`]: each replica's share, from the aggregator's Stats around the window;
//! - [`theory`]: the bound each configuration is held against (Little's law and friends);
//! - [`report`]: the table and the JSON;
//! - [`chart`]: the SVG charts;
//! - [`monitor`]: the live progress line;
//! - [`deploy`]: the local deployment started when no `--target` is given, and
//!   [`faults`]: what a scenario does to its servers (a relay frozen or killed, an address
//!   that refuses connections).
//!
//! - [`scenario`]: what the scenarios share: a local deployment with the aggregator's policies
//!   under test, an open loop against it, the aggregator's counters around it.
//!
//! [`run()`] is one scenario, [`compare()`] the matrix, [`merge()`] adds up runs made on
//! several machines; [`tail()`] measures what hedging does to heavy tails, [`overload()`] what
//! adaptive limits do under overload, and [`resilience()`] every mechanism against every fault,
//! the defaults beside the alternatives, with the rules the defaults must keep.
//! [`watch()`] shows a running aggregator live, from its Prometheus metrics.
#![forbid(unsafe_code)]

pub mod caller;
pub mod chart;
pub mod cli;
pub mod compare;
pub mod conn;
pub mod deploy;
pub mod endpoints;
pub mod faults;
pub mod grpc;
pub mod merge;
pub mod model;
pub mod monitor;
pub mod open_loop;
pub mod overload;
pub mod report;
pub mod resilience;
pub mod run;
pub mod scenario;
pub mod stats;
pub mod tail;
pub mod target;
pub mod theory;
pub mod watch;
pub mod workers;

pub use crate::compare::compare;
pub use crate::merge::merge;
pub use crate::overload::overload;
pub use crate::resilience::resilience;
pub use crate::run::run;
pub use crate::tail::tail;
pub use crate::watch::watch;
