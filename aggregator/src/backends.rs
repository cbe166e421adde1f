//! The aggregator's backends: one lazily connected HTTP/2 channel per backend, reused by every
//! call, and the per-backend concurrency limit.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use fanout_proto::v1::backend_client::BackendClient;
use tokio::sync::Semaphore;
use tonic::transport::{Channel, Endpoint};

/// The most backends one aggregator calls.
pub const MAX_BACKENDS: usize = 64;

/// `NAME=URL` from `--backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub name: String,
    /// `http://host:port`; hostnames are resolved when connecting (compose service names work).
    pub url: String,
}

impl FromStr for BackendSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let example = "e.g. `alpha=http://127.0.0.1:50061`";
        let (name, url) = s
            .split_once('=')
            .ok_or_else(|| format!("`{s}` is not NAME=URL; {example}"))?;
        let name = name.trim();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !valid_name {
            return Err(format!(
                "backend name `{name}` must be 1 to 64 letters, digits, `-`, `_` or `.`; {example}"
            ));
        }
        let url = url.trim();
        let url = if url.contains("://") {
            url.to_owned()
        } else {
            format!("http://{url}")
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{url}` (backend {name}) is not a URL: {e}; {example}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!(
                "`{url}` (backend {name}): only http:// is supported (plaintext HTTP/2); {example}"
            ));
        }
        if uri.port_u16().is_none() || uri.host().is_none_or(str::is_empty) {
            return Err(format!(
                "`{url}` (backend {name}) needs a host and a port; {example}"
            ));
        }
        Ok(BackendSpec {
            name: name.to_owned(),
            url,
        })
    }
}

impl fmt::Display for BackendSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.name, self.url)
    }
}

/// Checks a list of backends: at least one, no repeated names, not too many.
pub fn check_specs(specs: &[BackendSpec]) -> Result<(), String> {
    if specs.is_empty() {
        return Err("no backends: give --backend NAME=URL at least once".into());
    }
    if specs.len() > MAX_BACKENDS {
        return Err(format!(
            "{} backends given; the limit is {MAX_BACKENDS}",
            specs.len()
        ));
    }
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|o| o.name == s.name) {
            return Err(format!("backend name `{}` is given twice", s.name));
        }
    }
    Ok(())
}

/// One backend as the aggregator uses it.
#[derive(Debug)]
pub struct BackendHandle {
    pub name: String,
    pub url: String,
    /// Cloning a tonic client is cheap and shares the one channel.
    pub client: BackendClient<Channel>,
    /// Slots for calls in flight at this backend (`--backend-concurrency`).
    pub slots: Arc<Semaphore>,
    pub slot_count: usize,
    pub keepalive: Keepalive,
}

/// HTTP/2 keepalive settings of the backend channels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Keepalive {
    /// A ping this often...
    pub interval: Duration,
    /// ...and the connection is dropped when one goes unanswered this long.
    pub timeout: Duration,
}

/// All backends, in configuration order.
#[derive(Debug)]
pub struct Backends(Vec<BackendHandle>);

impl Backends {
    /// Creates a lazily connected channel per backend. Must run inside a tokio runtime (the
    /// channel's connection task lives there).
    pub fn connect(specs: &[BackendSpec], concurrency: usize, keepalive: Keepalive) -> Self {
        Backends(
            specs
                .iter()
                .map(|spec| BackendHandle {
                    name: spec.name.clone(),
                    url: spec.url.clone(),
                    client: BackendClient::new(channel(&spec.url, keepalive)),
                    keepalive,
                    slots: Arc::new(Semaphore::new(concurrency)),
                    slot_count: concurrency,
                })
                .collect(),
        )
    }

    /// New channels to the same backends, owned by the runtime this runs in, sharing these
    /// backends' concurrency slots.
    pub fn reconnect_here(&self) -> Self {
        Backends(
            self.0
                .iter()
                .map(|b| BackendHandle {
                    name: b.name.clone(),
                    url: b.url.clone(),
                    client: BackendClient::new(channel(&b.url, b.keepalive)),
                    keepalive: b.keepalive,
                    slots: b.slots.clone(),
                    slot_count: b.slot_count,
                })
                .collect(),
        )
    }

    pub fn get(&self, index: usize) -> &BackendHandle {
        &self.0[index]
    }

    /// The index of the backend called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.0.iter().position(|b| b.name == name)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Names, comma-separated, for error messages.
    pub fn names(&self) -> String {
        self.0
            .iter()
            .map(|b| b.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One HTTP/2 channel to `url`, connected on first use and reconnected after failures.
fn channel(url: &str, keepalive: Keepalive) -> Channel {
    // The URL was checked when the flags were parsed.
    let endpoint = Endpoint::from_shared(url.to_owned()).expect("checked backend URL");
    endpoint
        // Fail a connection attempt quickly: per-attempt timeouts bound the call anyway, and a
        // quick failure (UNAVAILABLE) can be retried.
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        // HTTP/2 pings notice a backend that died without closing its connection (a host that
        // vanished, a SIGSTOPped process), so the channel reconnects instead of waiting forever.
        .http2_keep_alive_interval(keepalive.interval)
        .keep_alive_timeout(keepalive.timeout)
        .keep_alive_while_idle(true)
        .connect_lazy()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_explain_mistakes() {
        let ok: BackendSpec = "alpha=http://127.0.0.1:50061".parse().unwrap();
        assert_eq!(ok.name, "alpha");
        let bare: BackendSpec = "beta=backend-beta:50061".parse().unwrap();
        assert_eq!(bare.url, "http://backend-beta:50061");
        for (spec, want) in [
            ("alpha", "is not NAME=URL"),
            ("=http://x:1", "backend name ``"),
            ("a b=http://x:1", "backend name `a b`"),
            ("a=https://x:1", "only http://"),
            ("a=http://x", "needs a host and a port"),
            ("a=http://[::1", "is not a URL"),
        ] {
            let err = spec.parse::<BackendSpec>().unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn lists_need_unique_names() {
        let a: BackendSpec = "a=http://x:1".parse().unwrap();
        assert!(check_specs(&[]).unwrap_err().contains("no backends"));
        assert!(
            check_specs(&[a.clone(), a])
                .unwrap_err()
                .contains("given twice")
        );
    }
}
