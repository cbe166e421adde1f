//! A client's TLS: which certificate authorities it trusts for `https://` servers (`--tls-ca`,
//! or the system's roots without it) and the certificate it presents for mTLS
//! (`--tls-client-cert`, `--tls-client-key`), read and checked once, at start-up.
//!
//! The same files make two kinds of config: tonic's [`ClientTlsConfig`] for the aggregator's
//! channels ([`ClientTls::tonic`]), and a rustls `ClientConfig` for the loadgen, which speaks
//! HTTP/2 over tokio-rustls itself ([`ClientTls::connector`]).

use std::path::PathBuf;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tonic::transport::{Certificate, ClientTlsConfig, Identity};

use crate::files::{self, FileError};
use crate::server::roots;

/// The files a client's TLS is made of; plain data from the flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// `--tls-ca`: trust these CAs (only these) for `https://` servers; unset, the system's.
    pub ca: Option<PathBuf>,
    /// `--tls-client-cert` and `--tls-client-key`: the certificate presented to servers that
    /// ask for one.
    pub identity: Option<(PathBuf, PathBuf)>,
}

/// A client's TLS, checked; cheap to clone.
#[derive(Debug, Clone)]
pub struct ClientTls {
    files: ClientTlsFiles,
    /// The CA file's PEM, checked to hold usable certificates.
    ca_pem: Option<Arc<[u8]>>,
    /// The client certificate's and key's PEM, checked to match.
    identity_pem: Option<IdentityPem>,
}

/// A client certificate chain and its key, as PEM.
#[derive(Debug, Clone)]
struct IdentityPem {
    cert: Arc<[u8]>,
    key: Arc<[u8]>,
}

impl ClientTls {
    /// Reads and checks the files: an error names the file and the problem.
    pub fn load(files: &ClientTlsFiles) -> Result<ClientTls, FileError> {
        let ca_pem = match &files.ca {
            Some(path) => {
                roots("--tls-ca", path)?;
                Some(files::read("--tls-ca", path)?.into())
            }
            None => None,
        };
        let identity_pem = match &files.identity {
            Some((cert, key)) => {
                files::certified_key(("--tls-client-cert", cert), ("--tls-client-key", key))?;
                Some(IdentityPem {
                    cert: files::read("--tls-client-cert", cert)?.into(),
                    key: files::read("--tls-client-key", key)?.into(),
                })
            }
            None => None,
        };
        Ok(ClientTls {
            files: files.clone(),
            ca_pem,
            identity_pem,
        })
    }

    /// No CA file and no client certificate: the system's roots, no identity.
    pub fn system() -> ClientTls {
        ClientTls {
            files: ClientTlsFiles::default(),
            ca_pem: None,
            identity_pem: None,
        }
    }

    pub fn files(&self) -> &ClientTlsFiles {
        &self.files
    }

    /// tonic's TLS config for a server that must prove it is `domain` (a host name or an IP
    /// address, also sent as SNI when it is a name).
    pub fn tonic(&self, domain: &str) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new().domain_name(domain);
        config = match &self.ca_pem {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some(IdentityPem { cert, key }) = &self.identity_pem {
            config = config.identity(Identity::from_pem(cert, key));
        }
        config
    }

    /// A rustls config speaking HTTP/2 (ALPN `h2`), for tokio-rustls. Fails only when no CA file
    /// was given and the system has no root certificates.
    pub fn rustls(&self) -> Result<Arc<ClientConfig>, String> {
        let roots = match &self.files.ca {
            Some(path) => roots("--tls-ca", path).map_err(|e| e.to_string())?,
            None => {
                let found = rustls_native_certs::load_native_certs();
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(
                        "no root certificates found on this system (install ca-certificates, \
                         or give --tls-ca)"
                            .into(),
                    );
                }
                roots
            }
        };
        let builder = ClientConfig::builder_with_provider(files::provider())
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots);
        let mut config = match (&self.files.identity, &self.identity_pem) {
            (Some((cert_path, key_path)), Some(pem)) => {
                let certs = files::certificates("--tls-client-cert", cert_path, &pem.cert)
                    .map_err(|e| e.to_string())?;
                let key = files::private_key("--tls-client-key", key_path, &pem.key)
                    .map_err(|e| e.to_string())?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| e.to_string())?
            }
            _ => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(config))
    }

    /// A tokio-rustls connector of [`ClientTls::rustls`].
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, String> {
        Ok(tokio_rustls::TlsConnector::from(self.rustls()?))
    }
}

/// The name a server at `host` (a URL's host: a name, an IPv4 address or a bracketed IPv6
/// address) must prove it is.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(bare.to_owned()).map_err(|e| format!("`{host}` is not a host name: {e}"))
}
