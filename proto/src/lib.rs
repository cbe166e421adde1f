//! The `fanout.v1` gRPC API, generated from `fanout/v1/fanout.proto` at build time.
//!
//! - [`v1`]: messages, the `Backend` and `Aggregator` clients and servers.
//! - [`paths`]: the methods' HTTP/2 paths.
//! - [`limits`]: what a request may ask for, checked the same way by both servers.
//! - [`cli`]: the flag values every binary shares (`--mode`, `--fanout`, human durations).
//! - [`code_name`]: a gRPC code as grpcurl spells it.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for the servers' reflection service, so
//!   `grpcurl list` and `grpcurl describe` work without the .proto file.
#![forbid(unsafe_code)]

/// Messages and services of package `fanout.v1`.
pub mod v1 {
    tonic::include_proto!("fanout.v1");
}

pub mod cli;
pub mod limits;

use tonic::Code;

/// The HTTP/2 paths of the methods, for clients that build their requests themselves (the
/// loadgen, over the `h2` crate).
pub mod paths {
    pub const BACKEND_FETCH: &str = "/fanout.v1.Backend/Fetch";
    pub const BACKEND_STATS: &str = "/fanout.v1.Backend/Stats";
    pub const AGGREGATE: &str = "/fanout.v1.Aggregator/Aggregate";
    pub const AGGREGATE_STREAM: &str = "/fanout.v1.Aggregator/AggregateStream";
    pub const AGGREGATOR_STATS: &str = "/fanout.v1.Aggregator/Stats";
}

/// The encoded `FileDescriptorSet` of the whole API, for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("fanout_descriptor");

impl v1::Mode {
    /// The name used on the command line (`--mode`), e.g. `spawn-blocking`.
    pub fn cli_name(self) -> &'static str {
        match self {
            v1::Mode::Unspecified => "unspecified",
            v1::Mode::Async => "async",
            v1::Mode::Blocking => "blocking",
            v1::Mode::SpawnBlocking => "spawn-blocking",
            v1::Mode::Cpu => "cpu",
        }
    }
}

impl v1::Fanout {
    /// The name used on the command line (`--fanout`), e.g. `sequential`.
    pub fn cli_name(self) -> &'static str {
        match self {
            v1::Fanout::Unspecified => "unspecified",
            v1::Fanout::Concurrent => "concurrent",
            v1::Fanout::Sequential => "sequential",
            v1::Fanout::Blocking => "blocking",
        }
    }
}

/// The canonical upper-case name of a gRPC code, as grpcurl and the gRPC docs spell it.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}
