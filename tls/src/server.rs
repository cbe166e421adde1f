//! A server's TLS: its certificate and key (and, for mTLS, the CA its clients' certificates must
//! chain to), read from PEM files into a rustls `ServerConfig` that is replaced when the files
//! change or on SIGHUP.
//!
//! Each accepted connection takes the config current at that moment ([`ServerTls::config`]), so
//! a rotation affects new connections only: connections already open keep their session and
//! their calls. A rotation that fails (a half-written file, a key that does not match yet)
//! keeps the config that works, logs what is wrong, and is tried again at the next check.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use rustls::server::WebPkiClientVerifier;
use rustls::server::{ResolvesServerCert, ServerConfig};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, server::ClientHello};

use crate::files::{self, FileError, Problem};

/// The files a server's TLS is made of; plain data from the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTlsFiles {
    /// `--tls-cert`: the certificate chain, the server's own first.
    pub cert: PathBuf,
    /// `--tls-key`: its private key.
    pub key: PathBuf,
    /// `--tls-client-ca`: when set, clients must present a certificate that chains to one of
    /// these (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// How often the files are compared with what was loaded (a few small reads).
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// A server's TLS config, reloadable.
#[derive(Debug)]
pub struct ServerTls {
    files: ServerTlsFiles,
    current: RwLock<Arc<ServerConfig>>,
    /// The file contents the current config was made from, to notice a change, and the last
    /// error logged, so that a file that stays broken is reported once, not at every check.
    loaded: Mutex<(Contents, Option<String>)>,
}

/// What was read from the files.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Contents {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl ServerTls {
    /// Reads and checks the files: an error names the file and the problem.
    pub fn load(files: ServerTlsFiles) -> Result<Arc<ServerTls>, FileError> {
        let contents = read_all(&files)?;
        let config = build(&files)?;
        Ok(Arc::new(ServerTls {
            files,
            current: RwLock::new(config),
            loaded: Mutex::new((contents, None)),
        }))
    }

    /// The config for a connection accepted now.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.files.client_ca.is_some()
    }

    pub fn files(&self) -> &ServerTlsFiles {
        &self.files
    }

    /// Reads the files again and, when they differ from what is loaded (or `force`), makes a
    /// new config of them. Returns whether the config was replaced; on an error the config in
    /// use stays.
    pub fn reload(&self, force: bool) -> Result<bool, FileError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let outcome = read_all(&self.files).and_then(|now| {
            if !force && now == loaded.0 {
                return Ok(None);
            }
            Ok(Some((build(&self.files)?, now)))
        });
        match outcome {
            Ok(None) => Ok(false),
            Ok(Some((config, contents))) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
                *loaded = (contents, None);
                tracing::info!(
                    cert = %self.files.cert.display(),
                    "TLS certificate reloaded: new connections use it, open ones keep theirs"
                );
                Ok(true)
            }
            Err(e) => {
                let text = e.to_string();
                if loaded.1.as_deref() != Some(text.as_str()) {
                    tracing::error!(
                        "TLS files not reloaded, the previous certificate stays in use: {text}"
                    );
                    loaded.1 = Some(text);
                }
                Err(e)
            }
        }
    }

    /// Checks the files every `interval` and, with `sighup`, at each SIGHUP (which forces a
    /// reload), until the returned task is aborted or this `ServerTls` is dropped. Must be
    /// called within a tokio runtime.
    pub fn watch(
        self: &Arc<Self>,
        interval: Duration,
        sighup: bool,
    ) -> tokio::task::JoinHandle<()> {
        let weak: Weak<ServerTls> = Arc::downgrade(self);
        // Listening from now on, before the task first runs: a SIGHUP that comes early must
        // not find the default action (which ends the process).
        let mut hangups = if sighup {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        "cannot listen for SIGHUP ({e}); TLS files are still re-read when they change"
                    );
                    None
                }
            }
        } else {
            None
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                let force = tokio::select! {
                    _ = tick.tick() => false,
                    Some(()) = async {
                        match hangups.as_mut() {
                            Some(h) => h.recv().await,
                            None => std::future::pending().await,
                        }
                    } => true,
                };
                let Some(tls) = weak.upgrade() else { return };
                if force {
                    tracing::info!("SIGHUP: re-reading the TLS files");
                }
                // Reading a few small files; not worth the blocking pool.
                let _ = tls.reload(force);
            }
        })
    }
}

fn read_all(files: &ServerTlsFiles) -> Result<Contents, FileError> {
    Ok(Contents {
        cert: files::read("--tls-cert", &files.cert)?,
        key: files::read("--tls-key", &files.key)?,
        client_ca: match &files.client_ca {
            Some(p) => Some(files::read("--tls-client-ca", p)?),
            None => None,
        },
    })
}

/// A rustls config of the files: HTTP/2 by ALPN, client certificates required and verified
/// against the client CA when one is given.
fn build(files: &ServerTlsFiles) -> Result<Arc<ServerConfig>, FileError> {
    let key = files::certified_key(("--tls-cert", &files.cert), ("--tls-key", &files.key))?;
    let provider = files::provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    let builder = match &files.client_ca {
        Some(path) => {
            let roots = roots("--tls-client-ca", path)?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| FileError {
                    flag: "--tls-client-ca",
                    path: path.clone(),
                    problem: Problem::BadCertificate {
                        index: 0,
                        reason: e.to_string(),
                    },
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(Single(Arc::new(key))));
    // gRPC is HTTP/2 only; clients that offer ALPN (tonic, grpc-go, grpcurl) must get h2.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// The certificates of a CA file, as trust anchors.
pub fn roots(flag: &'static str, path: &Path) -> Result<RootCertStore, FileError> {
    let certs = files::certificates(flag, path, &files::read(flag, path)?)?;
    let mut roots = RootCertStore::empty();
    for (index, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| FileError {
            flag,
            path: path.to_owned(),
            problem: Problem::BadCertificate {
                index,
                reason: format!("not usable as a CA: {e}"),
            },
        })?;
    }
    Ok(roots)
}

/// One certificate for every client, whatever name it asks for (SNI): the check of the name is
/// the client's.
#[derive(Debug)]
struct Single(Arc<CertifiedKey>);

impl ResolvesServerCert for Single {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Dir, Issued};

    #[test]
    fn a_rotation_replaces_the_config_and_a_broken_one_keeps_it() {
        let dir = Dir::new();
        let ca = Issued::ca("test CA");
        let first = ca.leaf(&["localhost"]);
        let files = ServerTlsFiles {
            cert: dir.write("cert.pem", &first.cert_pem),
            key: dir.write("key.pem", &first.key_pem),
            client_ca: Some(dir.write("ca.pem", &ca.cert_pem)),
        };
        let tls = ServerTls::load(files).unwrap();
        let before = tls.config();
        assert!(!tls.reload(false).unwrap(), "nothing changed");
        assert!(Arc::ptr_eq(&before, &tls.config()));

        // Half a rotation: the new certificate, the old key. Refused; the old config stays.
        let second = ca.leaf(&["localhost"]);
        dir.write("cert.pem", &second.cert_pem);
        let err = tls.reload(false).unwrap_err().to_string();
        assert!(err.contains("does not match"), "{err}");
        assert!(Arc::ptr_eq(&before, &tls.config()));

        // The rotation completes.
        dir.write("key.pem", &second.key_pem);
        assert!(tls.reload(false).unwrap());
        assert!(!Arc::ptr_eq(&before, &tls.config()));
        // SIGHUP forces a reload even with the files unchanged.
        let after = tls.config();
        assert!(tls.reload(true).unwrap());
        assert!(!Arc::ptr_eq(&after, &tls.config()));
    }
}
