//! Reading certificates and keys from PEM files, with an error that names the flag, the file and
//! the problem (missing, not PEM, no certificate in it, a key that does not match, expired), so
//! a mistake stops a server at start-up with a sentence an operator can act on.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{PemObject, SectionKind};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What is wrong with one TLS file; shown as `--tls-cert certs/server.pem: <problem>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {}: {problem}", .path.display())]
pub struct FileError {
    /// The flag the file was given with (`--tls-cert`).
    pub flag: &'static str,
    pub path: PathBuf,
    pub problem: Problem,
}

/// What can be wrong with a TLS file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    Missing,
    Unreadable(String),
    /// No `-----BEGIN ...-----` section in it, or a broken one.
    NotPem(String),
    /// PEM, but without the kind of section the flag needs.
    Lacks {
        wanted: &'static str,
        found: Vec<String>,
    },
    /// A certificate that does not parse as X.509.
    BadCertificate {
        index: usize,
        reason: String,
    },
    Expired {
        index: usize,
        subject: String,
        not_after: String,
    },
    NotYetValid {
        index: usize,
        subject: String,
        not_before: String,
    },
    /// The private key cannot be used (an algorithm rustls does not sign with, a broken key).
    BadKey(String),
    /// The key is fine but belongs to another certificate.
    KeyMismatch {
        cert: PathBuf,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("no such file"),
            Problem::Unreadable(e) => write!(f, "cannot read it: {e}"),
            Problem::NotPem(why) => write!(f, "not a PEM file ({why})"),
            Problem::Lacks { wanted, found } if found.is_empty() => {
                write!(f, "PEM, but holds no {wanted}")
            }
            Problem::Lacks { wanted, found } => {
                write!(f, "holds no {wanted}, only: {}", found.join(", "))
            }
            Problem::BadCertificate { index, reason } => {
                write!(f, "certificate #{} does not parse: {reason}", index + 1)
            }
            Problem::Expired {
                index,
                subject,
                not_after,
            } => write!(
                f,
                "certificate #{} ({subject}) expired on {not_after}",
                index + 1
            ),
            Problem::NotYetValid {
                index,
                subject,
                not_before,
            } => write!(
                f,
                "certificate #{} ({subject}) is not valid before {not_before}",
                index + 1
            ),
            Problem::BadKey(e) => write!(f, "the private key cannot be used: {e}"),
            Problem::KeyMismatch { cert } => write!(
                f,
                "this private key does not match the certificate in {}",
                cert.display()
            ),
        }
    }
}

/// The bytes of a file, or why there are none.
pub fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| FileError {
        flag,
        path: path.to_owned(),
        problem: match e.kind() {
            std::io::ErrorKind::NotFound => Problem::Missing,
            _ => Problem::Unreadable(e.to_string()),
        },
    })
}

/// Every PEM section of `bytes`, with its kind.
fn sections(bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, Problem> {
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Problem::NotPem(e.to_string()))?;
    if sections.is_empty() {
        return Err(Problem::NotPem("no -----BEGIN ...----- section".into()));
    }
    Ok(sections)
}

fn kind_name(kind: SectionKind) -> String {
    match kind {
        SectionKind::Certificate => "a certificate",
        SectionKind::PrivateKey | SectionKind::RsaPrivateKey | SectionKind::EcPrivateKey => {
            "a private key"
        }
        SectionKind::PublicKey => "a public key",
        SectionKind::Crl => "a CRL",
        SectionKind::Csr => "a certificate request (CSR)",
        _ => "another kind of section",
    }
    .to_owned()
}

/// The certificates in a PEM file (a chain, leaf first, or a CA bundle), each checked to parse
/// and to be valid now.
pub fn certificates(
    flag: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let fail = |problem| FileError {
        flag,
        path: path.to_owned(),
        problem,
    };
    let sections = sections(bytes).map_err(fail)?;
    let certs: Vec<CertificateDer<'static>> = sections
        .iter()
        .filter(|(k, _)| *k == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if certs.is_empty() {
        return Err(fail(Problem::Lacks {
            wanted: "certificate (-----BEGIN CERTIFICATE-----)",
            found: sections.iter().map(|(k, _)| kind_name(*k)).collect(),
        }));
    }
    for (index, cert) in certs.iter().enumerate() {
        check_dates(index, cert, SystemTime::now()).map_err(fail)?;
    }
    Ok(certs)
}

/// Whether certificate `index` parses and `now` lies within its validity.
fn check_dates(index: usize, cert: &CertificateDer<'_>, now: SystemTime) -> Result<(), Problem> {
    let (_, parsed) =
        x509_parser::parse_x509_certificate(cert).map_err(|e| Problem::BadCertificate {
            index,
            reason: e.to_string(),
        })?;
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let validity = parsed.validity();
    let subject = parsed.subject().to_string();
    if now > validity.not_after.timestamp() {
        return Err(Problem::Expired {
            index,
            subject,
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before.timestamp() {
        return Err(Problem::NotYetValid {
            index,
            subject,
            not_before: validity.not_before.to_string(),
        });
    }
    Ok(())
}

/// The first private key in a PEM file (PKCS#8, PKCS#1 or SEC1).
pub fn private_key(
    flag: &'static str,
    path: &Path,
    bytes: &[u8],
) -> Result<PrivateKeyDer<'static>, FileError> {
    let fail = |problem| FileError {
        flag,
        path: path.to_owned(),
        problem,
    };
    let sections = sections(bytes).map_err(fail)?;
    sections
        .iter()
        .find_map(|(kind, der)| PrivateKeyDer::from_pem(*kind, der.clone()))
        .ok_or_else(|| {
            fail(Problem::Lacks {
                wanted: "private key (-----BEGIN PRIVATE KEY-----)",
                found: sections.iter().map(|(k, _)| kind_name(*k)).collect(),
            })
        })
}

/// The ring provider every config here uses: one provider, chosen explicitly, so nothing
/// depends on which of rustls' providers other crates happen to enable.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate chain and its private key, read from their files and checked to belong
/// together.
pub fn certified_key(
    (cert_flag, cert_path): (&'static str, &Path),
    (key_flag, key_path): (&'static str, &Path),
) -> Result<CertifiedKey, FileError> {
    let certs = certificates(cert_flag, cert_path, &read(cert_flag, cert_path)?)?;
    let key = private_key(key_flag, key_path, &read(key_flag, key_path)?)?;
    let fail = |problem| FileError {
        flag: key_flag,
        path: key_path.to_owned(),
        problem,
    };
    CertifiedKey::from_der(certs, key, &provider()).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => fail(Problem::KeyMismatch {
            cert: cert_path.to_owned(),
        }),
        other => fail(Problem::BadKey(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Dir, Issued};

    #[test]
    fn each_problem_is_named_with_its_file() {
        let dir = Dir::new();
        let ca = Issued::ca("test CA");
        let leaf = ca.leaf(&["localhost"]);
        let other = ca.leaf(&["localhost"]);
        let cert = dir.write("cert.pem", &leaf.cert_pem);
        let key = dir.write("key.pem", &leaf.key_pem);
        let other_key = dir.write("other-key.pem", &other.key_pem);
        let junk = dir.write("junk.pem", "hello\n");
        let missing = dir.path("missing.pem");
        let expired = dir.write("expired.pem", &ca.expired_leaf(&["localhost"]).cert_pem);

        certified_key(("--tls-cert", &cert), ("--tls-key", &key)).unwrap();
        let err = |c: &Path, k: &Path| {
            certified_key(("--tls-cert", c), ("--tls-key", k))
                .unwrap_err()
                .to_string()
        };
        let shown = |p: &Path| p.display().to_string();
        for (got, want) in [
            (
                err(&missing, &key),
                format!("--tls-cert {}: no such file", shown(&missing)),
            ),
            (
                err(&junk, &key),
                format!("--tls-cert {}: not a PEM file", shown(&junk)),
            ),
            (
                err(&key, &key),
                format!("--tls-cert {}: holds no certificate", shown(&key)),
            ),
            (
                err(&cert, &cert),
                format!("--tls-key {}: holds no private key", shown(&cert)),
            ),
            (
                err(&cert, &other_key),
                format!(
                    "--tls-key {}: this private key does not match the certificate in {}",
                    shown(&other_key),
                    shown(&cert)
                ),
            ),
            (
                err(&expired, &key),
                format!("--tls-cert {}: certificate #1", shown(&expired)),
            ),
        ] {
            assert!(got.starts_with(&want), "got `{got}`, want `{want}...`");
        }
        assert!(err(&expired, &key).contains("expired on"));
        assert!(err(&key, &key).contains("only: a private key"));
    }
}
