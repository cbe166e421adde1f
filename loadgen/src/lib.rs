//! `loadgen`: measures fanout under load, against theory.
//!
//! Three crates, data flowing one way through the records of `model`:
//! - `loadgen-client` ([`conn`], [`grpc`]): gRPC over `h2` connections, the one place the
//!   loadgen's protocol details live;
//! - `loadgen-engine` ([`target`], [`workers`], [`open_loop`], [`caller`], [`stats`],
//!   [`endpoints`], [`model`], [`report`], [`monitor`]): the load, what it measured, and the
//!   table and JSON of a run;
//! - this one: the flags ([`cli`]), the bound each configuration is held against ([`theory`],
//!   which knows the servers' latency models), the SVG charts ([`chart`]), the local deployment
//!   started when no `--target` is given ([`deploy`]) and what a scenario does to its servers
//!   ([`faults`]), and the experiments.
//!
//! [`run()`] is one scenario, [`compare()`] the matrix, [`merge()`] adds up runs made on
//! several machines; [`tail()`] measures what hedging does to heavy tails, [`overload()`] what
//! adaptive limits do under overload, and [`resilience()`] every mechanism against every fault,
//! the defaults beside the alternatives, with the rules the defaults must keep ([`scenario`]:
//! what the last three share). [`watch()`] shows a running aggregator live, from its
//! Prometheus metrics.
#![forbid(unsafe_code)]

pub mod chart;
pub mod cli;
pub mod compare;
pub mod deploy;
pub mod faults;
pub mod merge;
pub mod overload;
pub mod resilience;
pub mod run;
pub mod scenario;
pub mod tail;
pub mod theory;
pub mod watch;

pub use loadgen_client::{conn, grpc};
pub use loadgen_engine::{
    caller, endpoints, model, monitor, open_loop, report, stats, target, workers,
};

pub use crate::compare::compare;
pub use crate::merge::merge;
pub use crate::overload::overload;
pub use crate::resilience::resilience;
pub use crate::run::run;
pub use crate::tail::tail;
pub use crate::watch::watch;
