//! Transitional: the workspace's own HTTP/2 client, on its way out (issue 12).
#![forbid(unsafe_code)]

pub mod grpc;
pub mod http2;
