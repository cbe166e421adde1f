//! The `fanout.v1` gRPC API, generated from `fanout/v1/fanout.proto` at build time.
//!
//! - [`v1`]: messages, the `Backend` and `Aggregator` clients and servers.
//! - [`FILE_DESCRIPTOR_SET`]: the encoded descriptors, for the servers' reflection service, so
//!   `grpcurl list` and `grpcurl describe` work without the .proto file.
#![forbid(unsafe_code)]

/// Messages and services of package `fanout.v1`.
pub mod v1 {
    tonic::include_proto!("fanout.v1");
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
