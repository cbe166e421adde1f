//! W3C trace context over gRPC metadata: the server span of every call continues the caller's
//! trace (`traceparent` in the request headers), and outgoing calls carry the current span's
//! context ([`trace_headers`], for the workspace's own client).

use opentelemetry::propagation::{Extractor, Injector};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Reads propagation headers from an HTTP request.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// The server span of one incoming call (tonic's `trace_fn`), a child of the caller's span when
/// the request carries a `traceparent`. Health checks and reflection get none: a container
/// health check every few seconds would bury the calls that matter.
pub fn server_span(req: &http::Request<()>) -> tracing::Span {
    let path = req.uri().path();
    if path.starts_with("/grpc.health.") || path.starts_with("/grpc.reflection.") {
        return tracing::Span::none();
    }
    let span = tracing::info_span!(
        "rpc",
        otel.name = path.trim_start_matches('/'),
        otel.kind = "server",
        rpc.system = "grpc",
    );
    if span.is_disabled() {
        // Not exporting traces: don't pay for reading the caller's context either.
        return span;
    }
    let parent = opentelemetry::global::get_text_map_propagator(|p| {
        p.extract(&HeaderExtractor(req.headers()))
    });
    // Must happen before the span is first entered; tonic enters it after this returns.
    let _ = span.set_parent(parent);
    span
}

/// `span`'s trace context as headers for an outgoing HTTP/2 request, when the span is recorded
/// (for the clients that build their requests themselves: the loadgen's and the aggregator's).
pub fn trace_headers(span: &tracing::Span) -> Option<http::HeaderMap> {
    if span.is_disabled() {
        return None;
    }
    let mut headers = http::HeaderMap::new();
    let cx = span.context();
    opentelemetry::global::get_text_map_propagator(|p| {
        p.inject_context(&cx, &mut HeaderInjector(&mut headers))
    });
    Some(headers)
}

/// Writes propagation headers into HTTP headers.
struct HeaderInjector<'a>(&'a mut http::HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(k, v);
        }
    }
}

/// Marks `span` as failed in the exported trace, with `message`.
pub fn set_error(span: &tracing::Span, message: impl Into<String>) {
    span.set_status(opentelemetry::trace::Status::error(message.into()));
}
