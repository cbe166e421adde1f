//! The aggregator's backends: `--backend NAME=URL` checked, and each backend's client stack
//! (see [`crate::client`]) built over a lazily connected tonic channel.

use fanout_server::metrics::Durations;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use fanout_proto::v1::{FetchReply, FetchRequest};
use fanout_tls::ClientTls;
use tower::ServiceExt;

use crate::Config;
use crate::client::balance::Balance;
use crate::client::error::Failed;
use crate::client::fetch::Keepalive;
use crate::client::limit::Limiter;
use crate::client::replicas::Replicas;
use crate::client::{Answered, BackendStack, Call, ReplyCache, StackCounters, StackState};

/// The most backends one aggregator calls.
pub const MAX_BACKENDS: usize = 64;

/// `NAME=URL` from `--backend`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    pub name: String,
    /// `http://host:port` or `https://host:port`; hostnames are resolved when connecting
    /// (compose service names work), and over TLS the backend's certificate must name the host.
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
        // Messages quote what was typed, not the URL it would have become.
        let typed = url.trim();
        if typed.is_empty() {
            return Err(format!("backend {name} has no URL after `=`; {example}"));
        }
        let url = if typed.contains("://") {
            typed.to_owned()
        } else {
            format!("http://{typed}")
        };
        let uri: http::Uri = url
            .parse()
            .map_err(|e| format!("`{typed}` (backend {name}) is not a URL: {e}; {example}"))?;
        let scheme = match uri.scheme_str() {
            Some(s @ ("http" | "https")) => s,
            _ => {
                return Err(format!(
                    "`{typed}` (backend {name}): only http:// (plaintext HTTP/2) and https:// \
                     (TLS) are supported; {example}"
                ));
            }
        };
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("`{typed}` (backend {name}) has no host; {example}"));
        }
        if uri.port_u16().is_none() {
            return Err(format!("`{typed}` (backend {name}) has no port; {example}"));
        }
        // A path would be silently dropped: gRPC calls go to /package.Service/Method.
        if let Some(pq) = uri.path_and_query().filter(|pq| pq.as_str() != "/") {
            return Err(format!(
                "`{typed}` (backend {name}) has a path, `{pq}`, which gRPC would ignore: give \
                 scheme, host and port only; {example}"
            ));
        }
        if tonic::transport::Endpoint::from_shared(url.clone()).is_err() {
            return Err(format!(
                "`{typed}` (backend {name}) is not a URL tonic can use; {example}"
            ));
        }
        let url = format!("{scheme}://{}", uri.authority().map_or("", |a| a.as_str()));
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

/// The most URLs one backend name may list.
pub const MAX_REPLICA_URLS: usize = 256;

/// Checks a list of backends: at least one, not too many names or URLs, no `NAME=URL` twice.
/// A name given again with another URL adds a replica.
pub fn check_specs(specs: &[BackendSpec]) -> Result<(), String> {
    if specs.is_empty() {
        return Err("no backends: give --backend NAME=URL at least once".into());
    }
    let names = group(specs);
    if names.len() > MAX_BACKENDS {
        return Err(format!(
            "{} backends given; the limit is {MAX_BACKENDS}",
            names.len()
        ));
    }
    for (name, urls) in &names {
        if urls.len() > MAX_REPLICA_URLS {
            return Err(format!(
                "backend {name} has {} URLs; the limit is {MAX_REPLICA_URLS}",
                urls.len()
            ));
        }
        for (i, url) in urls.iter().enumerate() {
            if urls[..i].contains(url) {
                return Err(format!("`{name}={url}` is given twice"));
            }
        }
    }
    Ok(())
}

/// The specs by name, names in the order first given, each with its URLs in order.
pub fn group(specs: &[BackendSpec]) -> Vec<(String, Vec<String>)> {
    let mut names: Vec<(String, Vec<String>)> = Vec::new();
    for s in specs {
        match names.iter_mut().find(|(n, _)| *n == s.name) {
            Some((_, urls)) => urls.push(s.url.clone()),
            None => names.push((s.name.clone(), vec![s.url.clone()])),
        }
    }
    names
}

/// One backend as the aggregator calls it: a name, its replicas, and its stack.
#[derive(Debug)]
pub struct Backend {
    pub name: String,
    /// What its stacks on every runtime share: slots, budget, counters, the cache.
    state: StackState,
    /// Its endpoints, shared by every runtime too.
    replicas: Arc<Replicas>,
    keepalive: Keepalive,
    tls: ClientTls,
    stack: BackendStack,
}

impl Backend {
    /// The backend's stack, with channels to its endpoints owned by the current runtime (made
    /// as calls first need them).
    fn new(
        state: StackState,
        replicas: Arc<Replicas>,
        keepalive: Keepalive,
        tls: ClientTls,
    ) -> Self {
        let balance = Balance::new(replicas.clone(), keepalive, tls.clone());
        Backend {
            name: state.name.to_string(),
            stack: crate::client::stack(&state, balance),
            state,
            replicas,
            keepalive,
            tls,
        }
    }

    /// One call through the whole stack; never outlives `req.deadline` by more than a few
    /// milliseconds. Dropping the future cancels the call at the backend.
    pub async fn call(&self, req: Call<FetchRequest>) -> Result<Answered<FetchReply>, Failed> {
        self.stack.clone().oneshot(req).await
    }

    pub fn counters(&self) -> &StackCounters {
        &self.state.counters
    }

    pub fn limiter(&self) -> &Arc<Limiter> {
        &self.state.limiter
    }

    pub fn replicas(&self) -> &Replicas {
        &self.replicas
    }
}

/// All backends, in configuration order.
#[derive(Debug)]
pub struct Backends(Vec<Backend>);

impl Backends {
    /// Each configured backend's stack, over channels that connect on first use (`https://`
    /// ones with `tls`), on the runtime this is called on.
    /// With `durations`, each backend records its attempts there.
    pub fn connect(
        config: &Config,
        cache: Option<ReplyCache>,
        tls: &ClientTls,
        durations: Option<&Durations>,
    ) -> Self {
        let keepalive = Keepalive {
            interval: config.keepalive_interval,
            timeout: config.keepalive_timeout,
        };
        Backends(
            group(&config.backends)
                .into_iter()
                .map(|(name, urls)| {
                    let state = StackState::new(
                        &name,
                        config.retry,
                        config.hedge,
                        config.backend_concurrency,
                        config.queue_timeout,
                        cache.clone(),
                    )
                    .with_metrics(durations);
                    let replicas = Replicas::start(
                        state.name.clone(),
                        &urls,
                        config.replicas,
                        keepalive,
                        tls.clone(),
                        config.resolver.clone(),
                    );
                    Backend::new(state, replicas, keepalive, tls.clone())
                })
                .collect(),
        )
    }

    /// The same backends over new channels owned by the runtime this runs in, sharing these
    /// backends' slots, budgets and counters.
    pub fn reconnect_here(&self) -> Self {
        Backends(
            self.0
                .iter()
                .map(|b| {
                    Backend::new(
                        b.state.clone(),
                        b.replicas.clone(),
                        b.keepalive,
                        b.tls.clone(),
                    )
                })
                .collect(),
        )
    }

    pub fn get(&self, index: usize) -> &Backend {
        &self.0[index]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Backend> {
        self.0.iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_explain_mistakes() {
        let ok: BackendSpec = "alpha=http://127.0.0.1:50061".parse().unwrap();
        assert_eq!(ok.name, "alpha");
        let bare: BackendSpec = "beta=backend-beta:50061".parse().unwrap();
        assert_eq!(bare.url, "http://backend-beta:50061");
        let slash: BackendSpec = "gamma=http://[::1]:50061/".parse().unwrap();
        assert_eq!(slash.url, "http://[::1]:50061");
        let tls: BackendSpec = "delta=https://backend-delta:50061".parse().unwrap();
        assert_eq!(tls.url, "https://backend-delta:50061");
        for (spec, want) in [
            ("alpha", "is not NAME=URL"),
            ("=http://x:1", "backend name ``"),
            ("a b=http://x:1", "backend name `a b`"),
            (
                "a=ftp://x:1",
                "only http:// (plaintext HTTP/2) and https://",
            ),
            ("a=http://x", "`http://x` (backend a) has no port"),
            ("a=x", "`x` (backend a) has no port"),
            ("alpha=", "backend alpha has no URL"),
            ("a=http://x:1/v1", "has a path, `/v1`"),
            ("a=http://[::1", "`http://[::1` (backend a) is not a URL"),
        ] {
            let err = spec.parse::<BackendSpec>().unwrap_err();
            assert!(err.contains(want), "{spec}: {err}");
        }
    }

    #[test]
    fn a_name_given_again_adds_a_replica() {
        let a: BackendSpec = "a=http://x:1".parse().unwrap();
        assert!(check_specs(&[]).unwrap_err().contains("no backends"));
        assert!(
            check_specs(&[a.clone(), a.clone()])
                .unwrap_err()
                .contains("`a=http://x:1` is given twice")
        );
        // The same name with another URL is a replica.
        let a2: BackendSpec = "a=http://y:1".parse().unwrap();
        let b: BackendSpec = "b=http://x:2".parse().unwrap();
        check_specs(&[a.clone(), b.clone(), a2.clone()]).unwrap();
        assert_eq!(
            group(&[a, b, a2]),
            vec![
                (
                    "a".to_owned(),
                    vec!["http://x:1".to_owned(), "http://y:1".to_owned()]
                ),
                ("b".to_owned(), vec!["http://x:2".to_owned()]),
            ]
        );
    }
}
