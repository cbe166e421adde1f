//! Certificates for the TLS tests, made at test time (rcgen, through `fanout_tls::testing`) and
//! written to a temporary directory: a CA, server certificates for given names, a client
//! certificate; and clients that trust the CA.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use aggregator::client::replicas::Resolve;
use fanout_tls::testing::{Dir, Issued};
use fanout_tls::{ClientTls, ClientTlsFiles, ServerTlsFiles};
use futures::future::BoxFuture;
use tonic::transport::{Channel, Endpoint};

/// A CA and the files it issued.
pub struct Pki {
    pub dir: Dir,
    pub ca: Issued,
    /// The CA's certificate, for `--tls-ca` and `--tls-client-ca`.
    pub ca_file: PathBuf,
    issued: std::sync::atomic::AtomicU64,
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = Dir::new();
        let ca = Issued::ca(name);
        let ca_file = dir.write("ca.pem", &ca.cert_pem);
        Pki {
            dir,
            ca,
            ca_file,
            issued: Default::default(),
        }
    }

    /// A certificate for `names` and its key, written to files: (cert, key).
    pub fn issue(&self, names: &[&str]) -> (PathBuf, PathBuf) {
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let leaf = self.ca.leaf(names);
        (
            self.dir.write(&format!("cert-{n}.pem"), &leaf.cert_pem),
            self.dir.write(&format!("key-{n}.pem"), &leaf.key_pem),
        )
    }

    /// Server TLS for `names`, with client certificates required when `mutual`.
    pub fn server(&self, names: &[&str], mutual: bool) -> ServerTlsFiles {
        let (cert, key) = self.issue(names);
        ServerTlsFiles {
            cert,
            key,
            client_ca: mutual.then(|| self.ca_file.clone()),
        }
    }

    /// A client that trusts this CA, with a certificate of its own when `identity`.
    pub fn client(&self, identity: bool) -> ClientTlsFiles {
        ClientTlsFiles {
            ca: Some(self.ca_file.clone()),
            identity: identity.then(|| self.issue(&["client.test"])),
        }
    }
}

/// A tonic channel to `https://127.0.0.1:PORT` of `addr`, checking the server is `name`.
pub async fn channel(
    addr: SocketAddr,
    name: &str,
    client: &ClientTlsFiles,
) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTls::load(client).expect("client TLS files");
    Endpoint::from_shared(format!("https://{addr}"))?
        .tls_config(tls.tonic(name))?
        .connect()
        .await
}

/// A resolver that knows a few names (`alpha.test` and the like) and nothing else.
#[derive(Debug, Clone, Default)]
pub struct Names(pub Vec<(String, SocketAddr)>);

impl Resolve for Names {
    fn resolve(
        &self,
        host: &str,
        port: u16,
    ) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let found: Vec<SocketAddr> = self
            .0
            .iter()
            .filter(|(n, _)| n == host)
            .map(|(_, a)| SocketAddr::new(a.ip(), port))
            .collect();
        Box::pin(async move { Ok(found) })
    }
}

impl Names {
    pub fn resolver(self) -> aggregator::Resolver {
        aggregator::Resolver(Arc::new(self))
    }
}
