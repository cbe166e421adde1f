//! Fetching the aggregator's `/metrics` and reading it: one GET over HTTP/1.1 (hyper-util's
//! client, already under tonic), the body parsed by `prometheus-parse`, which groups each
//! histogram's buckets by their labels. Everything that can go wrong is said as one line naming
//! the URL and the problem: nothing answering, an answer other than 200, an answer that is not
//! Prometheus text, or metrics that are not an aggregator's.
//!
//! `prometheus-parse` splits labels at `,` and `=` without minding quotes, so a label value
//! holding either would be misread; the aggregator's never do (backend names are letters,
//! digits, `-`, `_` and `.`; endpoints are `host:port`).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_parse::{HistogramCount, Labels, Sample, Value};

use crate::target::error_chain;

/// A series every aggregator exports, and no backend: how an aggregator's metrics are told.
pub const AGGREGATOR_SERIES: &str = "fanout_calls_shed_total";

/// A metric only backends export (described even before it has a sample).
const BACKEND_METRIC: &str = "fanout_fetch_delay_seconds";

/// Far more than an aggregator's metrics (some 10 kB a backend).
const MAX_BODY: usize = 64 << 20;

/// `--target`: an `http://` URL (`host:port` alone is taken as one), `/metrics` when it has no
/// path.
pub fn metrics_url(s: &str) -> Result<Uri, String> {
    let s = s.trim();
    let full = crate::target::normalize_url(s);
    let uri: Uri = full.parse().map_err(|e| {
        format!("`{s}` is not a URL ({e}); write it like http://127.0.0.1:9464 or 127.0.0.1:9464")
    })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(format!(
                "`{s}` is https: the servers serve their metrics over plain http \
                 (--metrics-listen); write it like http://127.0.0.1:9464"
            ));
        }
        _ => {
            return Err(format!(
                "`{s}` is not an http:// URL; write it like http://127.0.0.1:9464"
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!(
            "`{s}` has no host; write it like http://127.0.0.1:9464"
        ));
    }
    if matches!(uri.path(), "" | "/") && uri.query().is_none() {
        let mut parts = uri.into_parts();
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/metrics"));
        return Uri::from_parts(parts).map_err(|e| format!("`{s}`: {e}"));
    }
    Ok(uri)
}

/// One scrape, parsed, and when it was taken.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub taken: Instant,
    samples: Vec<Sample>,
    /// The metrics with a `# HELP` line.
    described: HashSet<String>,
}

impl Scrape {
    /// Reads Prometheus text; `Err` says why it is not that.
    pub fn parse(text: &str, taken: Instant) -> Result<Scrape, String> {
        let lines = text.lines().map(|l| Ok(l.to_owned()));
        let parsed = prometheus_parse::Scrape::parse(lines).map_err(|e| e.to_string())?;
        if parsed.samples.is_empty() {
            return Err("no samples in it".into());
        }
        Ok(Scrape {
            taken,
            samples: parsed.samples,
            described: parsed.docs.into_keys().collect(),
        })
    }

    /// Whether these are an aggregator's metrics.
    pub fn is_aggregator(&self) -> bool {
        self.scalars(AGGREGATOR_SERIES).next().is_some()
    }

    /// The counters, gauges and untyped samples called `name` (a histogram's `_count` too).
    pub fn scalars<'a>(&'a self, name: &'a str) -> impl Iterator<Item = (&'a Labels, f64)> {
        self.samples
            .iter()
            .filter(move |s| s.metric == name)
            .filter_map(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some((&s.labels, v)),
                _ => None,
            })
    }

    /// The histograms called `name` (without `_bucket`): their cumulative buckets.
    pub fn histograms<'a>(
        &'a self,
        name: &'a str,
    ) -> impl Iterator<Item = (&'a Labels, &'a [HistogramCount])> {
        self.samples
            .iter()
            .filter(move |s| s.metric == name)
            .filter_map(|s| match &s.value {
                Value::Histogram(b) => Some((&s.labels, b.as_slice())),
                _ => None,
            })
    }
}

/// Scrapes one URL, again and again, over kept-alive connections.
#[derive(Debug, Clone)]
pub struct Scraper {
    url: Uri,
    timeout: Duration,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl Scraper {
    /// Each scrape gives up after `timeout`.
    pub fn new(url: Uri, timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Scraper {
            url,
            timeout,
            client,
        }
    }

    pub fn url(&self) -> &Uri {
        &self.url
    }

    /// One scrape of an aggregator's metrics, or what went wrong, naming the URL.
    pub async fn scrape(&self) -> Result<Scrape, String> {
        let url = &self.url;
        let taken = Instant::now();
        let (status, content_type, body) =
            match tokio::time::timeout(self.timeout, self.get()).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => {
                    return Err(format!(
                        "cannot scrape {url}: {e}. Is an aggregator serving its metrics there \
                     (its --metrics-listen address, not its gRPC one)?"
                    ));
                }
                Err(_) => {
                    return Err(format!(
                        "cannot scrape {url}: no answer within {}",
                        humantime::format_duration(self.timeout)
                    ));
                }
            };
        let text = String::from_utf8_lossy(&body);
        if status != StatusCode::OK {
            return Err(format!(
                "{url} answered {status}{}",
                match first_line(&text) {
                    "" => String::new(),
                    line => format!(": {line}"),
                }
            ));
        }
        let scrape = Scrape::parse(&text, taken).map_err(|why| {
            format!(
                "{url} answered 200 but not with Prometheus text ({why}; content-type {}; it \
                 begins `{}`)",
                content_type.as_deref().unwrap_or("none"),
                first_line(&text)
            )
        })?;
        if !scrape.is_aggregator() {
            let whose = if scrape.described.contains(BACKEND_METRIC) {
                "a backend's: watch reads an aggregator's"
            } else {
                "no aggregator's"
            };
            return Err(format!(
                "{url} serves Prometheus metrics, but {whose} (no {AGGREGATOR_SERIES})"
            ));
        }
        Ok(scrape)
    }

    /// The answer's status, content type and body.
    async fn get(&self) -> Result<(StatusCode, Option<String>, Bytes), String> {
        let request = Request::get(self.url.clone())
            .header(header::USER_AGENT, "loadgen-watch")
            .body(Empty::new())
            .map_err(|e| e.to_string())?;
        let response = self
            .client
            .request(request)
            .await
            .map_err(|e| error_chain(&e))?;
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the answer: {e}"))?
            .to_bytes();
        Ok((status, content_type, body))
    }
}

/// The first non-empty line of `text`, at most 80 characters.
fn first_line(text: &str) -> &str {
    let line = text.lines().map(str::trim).find(|l| !l.is_empty());
    let line = line.unwrap_or("");
    match line.char_indices().nth(80) {
        Some((i, _)) => &line[..i],
        None => line,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_get_a_scheme_and_a_path_when_they_have_none() {
        for (given, want) in [
            ("127.0.0.1:9464", "http://127.0.0.1:9464/metrics"),
            ("http://127.0.0.1:9464", "http://127.0.0.1:9464/metrics"),
            ("http://127.0.0.1:9464/", "http://127.0.0.1:9464/metrics"),
            (
                "http://agg:9464/other/metrics",
                "http://agg:9464/other/metrics",
            ),
        ] {
            assert_eq!(metrics_url(given).unwrap().to_string(), want, "{given}");
        }
        for (given, why) in [
            ("https://127.0.0.1:9464", "plain http"),
            ("ftp://127.0.0.1:9464", "not an http:// URL"),
            ("http://", "not a URL"),
            ("http://a b", "not a URL"),
        ] {
            let err = metrics_url(given).unwrap_err();
            assert!(err.contains(why), "{given}: {err}");
        }
    }

    #[test]
    fn text_that_is_not_prometheus_is_refused_and_histograms_group_by_labels() {
        let now = Instant::now();
        assert!(Scrape::parse("<html><body>hi</body></html>", now).is_err());
        assert!(Scrape::parse("", now).is_err());
        let text = r#"
# TYPE h_seconds histogram
h_seconds_bucket{backend="a",code="0",le="0.1"} 1
h_seconds_bucket{backend="a",code="0",le="+Inf"} 2
h_seconds_bucket{backend="b",code="0",le="0.1"} 3
h_seconds_bucket{backend="b",code="0",le="+Inf"} 3
h_seconds_count{backend="a",code="0"} 2
# TYPE fanout_calls_shed_total counter
fanout_calls_shed_total 4
"#;
        let s = Scrape::parse(text, now).unwrap();
        assert!(s.is_aggregator());
        let mut h: Vec<_> = s.histograms("h_seconds").collect();
        h.sort_by_key(|(l, _)| l.get("backend").map(str::to_owned));
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].0.get("code"), Some("0"));
        let a: Vec<_> = h[0].1.iter().map(|b| (b.less_than, b.count)).collect();
        assert_eq!(a, [(0.1, 1.0), (f64::INFINITY, 2.0)]);
        let count: Vec<_> = s.scalars("h_seconds_count").map(|(_, v)| v).collect();
        assert_eq!(count, [2.0]);
        assert_eq!(
            s.scalars("fanout_calls_shed_total").next().map(|x| x.1),
            Some(4.0)
        );
    }

    #[test]
    fn long_first_lines_are_cut() {
        assert_eq!(first_line("\n\n  abc \nxyz"), "abc");
        assert_eq!(first_line(&"é".repeat(100)).chars().count(), 80);
    }
}
