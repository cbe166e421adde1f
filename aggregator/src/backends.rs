//! The aggregator's backends: one lazily connected HTTP/2 connection per backend, reused by
//! every call and opened again after it breaks, and the per-backend concurrency limit.
//!
//! The calls go over the workspace's own HTTP/2 client (`fanout_common::http2` and
//! `fanout_common::grpc`) rather than through tonic's `Channel`, for CPU per call (BENCHMARKS.md
//! §2). What `Channel` did besides, this does too: connect on first use (the aggregator starts
//! while a backend is down), resolve hostnames (compose service names), bound a connection
//! attempt to a second, reconnect after a failure, and send HTTP/2 pings so a backend that
//! vanished without closing its connection is noticed. Calls from many tasks at once share the
//! connection's output buffer, so the requests of concurrent calls leave in one write.

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_common::grpc;
use fanout_common::http2::{self, Client, Request};
use fanout_proto::v1::{FetchReply, FetchRequest};
use http::Uri;
use http::uri::Authority;
use tokio::sync::Semaphore;
use tokio::time::{Instant, sleep, timeout};
use tonic::Status;

/// How long one connection attempt may take: per-attempt timeouts bound a call anyway, and a
/// quick failure (UNAVAILABLE) can be retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

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
    /// The backend's connection, shared by every call.
    pub channel: BackendChannel,
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
    /// Creates a lazily connected channel per backend (connected by the first call, on the
    /// runtime that call runs on).
    pub fn connect(specs: &[BackendSpec], concurrency: usize, keepalive: Keepalive) -> Self {
        Backends(
            specs
                .iter()
                .map(|spec| BackendHandle {
                    name: spec.name.clone(),
                    url: spec.url.clone(),
                    channel: BackendChannel::new(&spec.url, keepalive),
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
                    channel: BackendChannel::new(&b.url, b.keepalive),
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

/// One backend's HTTP/2 connection: opened by the first call that needs it, shared by all
/// calls while it lives, opened again by the next call after it closes or breaks.
#[derive(Debug)]
pub struct BackendChannel {
    /// `host:port`: where to connect, and the `:authority` sent.
    authority: Authority,
    keepalive: Keepalive,
    /// The connection in use, if there is one.
    live: Mutex<Option<Client>>,
    /// Held while connecting, so concurrent calls share one attempt; holds the last failed
    /// attempt's error and when it failed.
    connecting: tokio::sync::Mutex<Option<(Instant, Status)>>,
}

impl BackendChannel {
    /// A channel to `url` (checked by [`BackendSpec`]'s parser); nothing is connected yet.
    pub fn new(url: &str, keepalive: Keepalive) -> Self {
        let uri: Uri = url.parse().expect("checked backend URL");
        BackendChannel {
            authority: uri.authority().expect("checked backend URL").clone(),
            keepalive,
            live: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(None),
        }
    }

    /// One `Fetch` with `deadline` sent as its `grpc-timeout` and `span`'s trace context. A
    /// connection that cannot be opened, breaks or closes under the call is `UNAVAILABLE`
    /// ("connection failed: ..." says why). Dropping the future cancels the call at the backend.
    pub async fn fetch(
        &self,
        req: &FetchRequest,
        deadline: Duration,
        span: &tracing::Span,
    ) -> Result<FetchReply, Status> {
        let client = self.client().await?;
        let trace_context = fanout_telemetry::propagation::trace_headers(span);
        let request = Request {
            path: fanout_proto::paths::BACKEND_FETCH,
            timeout: Some(deadline),
            metadata: trace_context.as_ref(),
        };
        let answer = grpc::unary(&client, &request, &grpc::frame(req)).await?;
        grpc::decode(answer)
    }

    /// A handle on the live connection, connecting first if there is none.
    async fn client(&self) -> Result<Client, Status> {
        if let Some(client) = self.current() {
            return Ok(client);
        }
        let asked = Instant::now();
        let mut last_failure = self.connecting.lock().await;
        // Another call may have connected, or failed to, while this one waited its turn.
        if let Some(client) = self.current() {
            return Ok(client);
        }
        if let Some((failed_at, status)) = &*last_failure
            && *failed_at >= asked
        {
            return Err(status.clone());
        }
        match self.connect().await {
            Ok(client) => {
                *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some(client.clone());
                *last_failure = None;
                Ok(client)
            }
            Err(status) => {
                *last_failure = Some((Instant::now(), status.clone()));
                Err(status)
            }
        }
    }

    fn current(&self) -> Option<Client> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.as_ref().filter(|c| !c.is_closed()).cloned()
    }

    async fn connect(&self) -> Result<Client, Status> {
        // The backend's URL always has a port (BackendSpec's parser checks it).
        let tcp = http2::connect(&self.authority, 80, CONNECT_TIMEOUT)
            .await
            .map_err(|why| Status::unavailable(format!("tcp connect error: {why}")))?;
        let (client, driver) = http2::handshake(tcp, self.authority.as_str());
        let driver = driver.coalescing();
        // The driver ends with the connection; its calls then fail as UNAVAILABLE (retryable).
        tokio::spawn(driver);
        tokio::spawn(keep_alive(
            client.clone(),
            self.keepalive,
            self.authority.to_string(),
        ));
        Ok(client)
    }
}

/// Pings the backend every `interval` while the connection lives; ends the connection when a
/// ping goes unanswered for `timeout`.
async fn keep_alive(client: Client, keepalive: Keepalive, backend: String) {
    loop {
        sleep(keepalive.interval).await;
        match timeout(keepalive.timeout, client.ping()).await {
            Ok(Ok(())) => {}
            // The connection ended.
            Ok(Err(_)) => return,
            Err(_) => {
                let why = format!(
                    "keep-alive timed out: no answer to a ping within {}",
                    fanout_proto::cli::fmt_duration(keepalive.timeout)
                );
                tracing::warn!("backend {backend}: {why}; dropping its connection");
                client.abort(why);
                return;
            }
        }
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
