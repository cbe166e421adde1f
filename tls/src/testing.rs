//! Certificates made on the spot for tests, with rcgen: a CA, leaves it signs for the names
//! given (usable as server and as client certificates), an expired leaf; and a directory to
//! write them into, removed when dropped. Behind the `testing` feature.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM; a CA also keeps what it needs to sign more.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    issuer: Option<Issuer<'static, KeyPair>>,
}

impl Issued {
    /// A self-signed CA called `name`.
    pub fn ca(name: &str) -> Issued {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().expect("CA key");
        let cert = params.self_signed(&key).expect("CA certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: Some(Issuer::new(params, key)),
        }
    }

    /// A certificate this CA signs for `names` (DNS names or IP addresses), valid now.
    pub fn leaf(&self, names: &[&str]) -> Issued {
        self.sign(names, false)
    }

    /// A certificate this CA signs for `names` that expired in 2001.
    pub fn expired_leaf(&self, names: &[&str]) -> Issued {
        self.sign(names, true)
    }

    fn sign(&self, names: &[&str], expired: bool) -> Issued {
        let issuer = self.issuer.as_ref().expect("only a CA signs");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).expect("leaf params");
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, issuer).expect("leaf certificate");
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            issuer: None,
        }
    }
}

/// A fresh directory under the system's temporary directory, removed when dropped.
pub struct Dir(PathBuf);

impl Dir {
    pub fn new() -> Dir {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "fanout-tls-{}-{}",
            std::process::id(),
            N.fetch_add(1, Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("make a temporary directory");
        Dir(dir)
    }

    /// The path of `name` in it (which need not exist).
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Writes `contents` to `name` in it, replacing the file at once (write aside, rename), as
    /// a certificate rotation does; returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.path(name);
        let aside = self.path(&format!(".{name}.new"));
        std::fs::write(&aside, contents).expect("write a file");
        std::fs::rename(&aside, &path).expect("move a file into place");
        path
    }

    pub fn root(&self) -> &Path {
        &self.0
    }
}

impl Default for Dir {
    fn default() -> Self {
        Dir::new()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
