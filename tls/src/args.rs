//! The TLS flags, shared by every binary that serves or calls: flattened into their CLIs so
//! each says the same thing the same way. Each is also read from an environment variable.

use std::path::PathBuf;

use clap::Args;

use crate::client::ClientTlsFiles;
use crate::server::ServerTlsFiles;

/// Serving TLS.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerTlsArgs {
    /// Serve TLS with this certificate chain (PEM, the server's own certificate first). Re-read
    /// when the file changes or on SIGHUP; open connections keep the certificate they began with.
    #[arg(long, env = "TLS_CERT", requires = "tls_key", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "TLS_KEY", requires = "tls_cert", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// Require every client to present a certificate issued by one of these CAs (PEM): mTLS.
    /// Needs --tls-cert.
    #[arg(
        long,
        env = "TLS_CLIENT_CA",
        requires = "tls_cert",
        value_name = "FILE"
    )]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServerTlsArgs {
    /// The files, when TLS is on.
    pub fn files(&self) -> Option<ServerTlsFiles> {
        Some(ServerTlsFiles {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            client_ca: self.tls_client_ca.clone(),
        })
    }
}

/// Calling `https://` servers.
#[derive(Debug, Clone, Default, Args)]
pub struct ClientTlsArgs {
    /// Trust only these CAs (PEM) for https:// servers [default: the system's root
    /// certificates].
    #[arg(long, env = "TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,

    /// Present this certificate (PEM) to https:// servers that ask for one (mTLS).
    #[arg(
        long,
        env = "TLS_CLIENT_CERT",
        requires = "tls_client_key",
        value_name = "FILE"
    )]
    pub tls_client_cert: Option<PathBuf>,

    /// The private key of --tls-client-cert (PEM).
    #[arg(
        long,
        env = "TLS_CLIENT_KEY",
        requires = "tls_client_cert",
        value_name = "FILE"
    )]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTlsArgs {
    pub fn files(&self) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: self.tls_ca.clone(),
            identity: self
                .tls_client_cert
                .clone()
                .zip(self.tls_client_key.clone()),
        }
    }
}
