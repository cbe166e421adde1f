//! TLS for fanout's servers and clients, with rustls (through tonic's TLS features and
//! tokio-rustls; no OpenSSL), from PEM files.
//!
//! - [`files`]: reading certificates and keys, with errors naming the flag, the file and the
//!   problem (missing, not PEM, key does not match, expired).
//! - [`server`]: a server's config ([`ServerTls`]), replaced when the files change or on
//!   SIGHUP; each connection takes the config current when it is accepted.
//! - [`client`]: a client's trust and identity ([`ClientTls`]), as tonic's `ClientTlsConfig`
//!   (the aggregator) or a tokio-rustls connector (the loadgen).
//! - [`args`]: the `--tls-*` flags every binary shares.
//! - `testing` (feature `testing`): certificates made on the spot with rcgen, for tests.
#![forbid(unsafe_code)]

pub mod args;
pub mod client;
pub mod files;
pub mod server;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use args::{ClientTlsArgs, ServerTlsArgs};
pub use client::{ClientTls, ClientTlsFiles};
pub use files::FileError;
pub use server::{ServerTls, ServerTlsFiles};
pub use tokio_rustls;
