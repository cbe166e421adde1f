//! Where a backend's endpoints come from: every `--backend NAME=URL` with the same name adds
//! its URL; a URL whose host is an IP address is one endpoint, one whose host is a name is one
//! endpoint per address the name resolves to (a Kubernetes headless Service, `docker compose
//! --scale`), resolved again every `--resolve-interval`. Addresses that appear are added,
//! addresses that vanish leave the set (calls in flight on them finish); a failed resolution
//! keeps the last good addresses, and is logged.

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;

use super::{Replica, Replicas};

/// Finds the addresses of a host name. [`Dns`] asks the system's resolver; tests inject their
/// own.
pub trait Resolve: Send + Sync + 'static {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>>;
}

/// The system's resolver (`getaddrinfo`, through tokio's blocking pool): `/etc/hosts`, DNS,
/// Docker's and Kubernetes' name servers alike.
#[derive(Debug, Clone, Copy, Default)]
pub struct Dns;

impl Resolve for Dns {
    fn resolve(&self, host: &str, port: u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// The resolver a config uses; [`Dns`] unless a test says otherwise.
#[derive(Clone)]
pub struct Resolver(pub Arc<dyn Resolve>);

impl Default for Resolver {
    fn default() -> Self {
        Resolver(Arc::new(Dns))
    }
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Resolver")
    }
}

/// A configured URL: an address to use as it is, or a name to resolve; either way with the
/// URL's scheme (`http` or `https`).
#[derive(Debug, Clone)]
pub(super) enum Source {
    Fixed(&'static str, SocketAddr),
    Named(Name),
}

/// A host name to resolve, from a configured URL.
#[derive(Debug, Clone)]
pub(super) struct Name {
    scheme: &'static str,
    host: String,
    port: u16,
    /// The URL as configured: its endpoints' origin.
    url: String,
}

impl Source {
    /// `url` was checked by `BackendSpec`: `http://host:port` or `https://host:port`.
    pub(super) fn of(url: &str) -> Source {
        let uri: http::Uri = url.parse().expect("a URL BackendSpec checked");
        let scheme = if uri.scheme_str() == Some("https") {
            "https"
        } else {
            "http"
        };
        let host = uri.host().unwrap_or_default();
        let port = uri.port_u16().unwrap_or(80);
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => Source::Fixed(scheme, SocketAddr::new(ip, port)),
            Err(_) => Source::Named(Name {
                scheme,
                host: bare.to_owned(),
                port,
                url: url.to_owned(),
            }),
        }
    }
}

impl Replicas {
    /// Replaces the named part of the set with `found`: addresses, each with its scheme and
    /// origin (the fixed part stays).
    pub(super) fn update(&self, found: Vec<(SocketAddr, &'static str, String)>) {
        let old = self.current();
        let by_addr: HashMap<&str, &Arc<Replica>> =
            old.iter().map(|r| (r.addr.as_str(), r)).collect();
        let mut next: Vec<Arc<Replica>> =
            old.iter().filter(|r| r.origin.is_none()).cloned().collect();
        for (addr, scheme, origin) in found {
            let key = addr.to_string();
            if next.iter().any(|r| r.addr == key) {
                continue;
            }
            match by_addr.get(key.as_str()) {
                Some(r) => next.push((*r).clone()),
                None => {
                    tracing::info!(backend = &*self.backend, endpoint = key, "endpoint added");
                    next.push(Arc::new(Replica::new(scheme, addr, Some(origin))));
                }
            }
        }
        for r in old.iter().filter(|r| !next.iter().any(|n| n.id == r.id)) {
            tracing::info!(
                backend = &*self.backend,
                endpoint = r.addr,
                in_flight = r.in_flight.load(Relaxed),
                "endpoint removed (calls in flight on it finish)"
            );
        }
        if next.len() != old.len() || next.iter().zip(old.iter()).any(|(a, b)| a.id != b.id) {
            self.set.send_replace(next.into());
        }
    }
}

/// Addresses in order, each once.
fn dedup(addrs: impl Iterator<Item = SocketAddr>) -> impl Iterator<Item = SocketAddr> {
    let mut seen = Vec::new();
    addrs.filter(move |a| {
        let new = !seen.contains(a);
        seen.push(*a);
        new
    })
}

/// Resolves the names now and every interval, while the set lives.
pub(super) async fn resolve_forever(
    replicas: Weak<Replicas>,
    names: Vec<Name>,
    resolver: Arc<dyn Resolve>,
) {
    // The last good addresses of each name.
    let mut known: Vec<Vec<SocketAddr>> = vec![Vec::new(); names.len()];
    loop {
        let Some(set) = replicas.upgrade() else {
            return;
        };
        let mut errors = Vec::new();
        for (i, Name { host, port, .. }) in names.iter().enumerate() {
            match resolver.resolve(host, *port).await {
                Ok(addrs) if !addrs.is_empty() => known[i] = dedup(addrs.into_iter()).collect(),
                Ok(_) => errors.push((i, format!("`{host}` resolved to no address"))),
                Err(e) => errors.push((i, format!("`{host}` did not resolve: {e}"))),
            }
        }
        for (i, e) in &errors {
            if known[*i].is_empty() {
                tracing::warn!(backend = &*set.backend, "{e}; no address known yet");
            } else {
                tracing::warn!(
                    backend = &*set.backend,
                    "{e}; keeping the last good addresses"
                );
            }
        }
        *set.last_error.lock().unwrap_or_else(|p| p.into_inner()) =
            errors.into_iter().next().map(|(_, e)| e);
        let found = names
            .iter()
            .zip(&known)
            .flat_map(|(name, addrs)| {
                addrs
                    .iter()
                    .map(move |a| (*a, name.scheme, name.url.clone()))
            })
            .collect();
        set.update(found);
        set.resolved.send_replace(true);
        let interval = set.policy.resolve_interval;
        drop(set);
        tokio::time::sleep(interval).await;
    }
}
