//! The loadgen as a user runs it (its binary, on deployments of its own or against servers
//! nobody here wrote): one test binary, a module per behaviour, the harness they share.
//!
//! One binary rather than one per file: a build for the tests links it once. Tests run on the
//! harness's threads (one per core); tests that drive a whole deployment at full speed take
//! [`harness::alone`] so that two of them never measure each other.

mod harness;

mod cli;
mod conn;
mod flags;
mod grpcio;
mod merge;
mod open_loop;
mod refused_streams;
mod resilience;
mod scenarios;
mod tls_and_limits;
mod watch;
