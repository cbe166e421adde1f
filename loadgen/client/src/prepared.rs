//! A request encoded once, sent many times.

use std::time::Duration;

use bytes::Bytes;
use fanout_telemetry::propagation;
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Uri};

use crate::grpc;

/// A request encoded once: its method, headers (`grpc-timeout` among them) and framed message.
#[derive(Debug, Clone)]
pub struct Prepared {
    path: PathAndQuery,
    headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Prepared {
    /// A call of `path` with `message`, encoded once, ready to be sent many times; `timeout` is
    /// sent as its `grpc-timeout`.
    pub fn new(
        path: &'static str,
        message: &impl prost::Message,
        timeout: Option<Duration>,
    ) -> Self {
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
        headers.insert(TE, HeaderValue::from_static("trailers"));
        if let Some(t) = timeout {
            let value = fanout_server::deadline::format(t);
            headers.insert(
                "grpc-timeout",
                HeaderValue::from_str(&value).expect("digits and a unit"),
            );
        }
        Prepared {
            path: PathAndQuery::from_static(path),
            headers,
            body: grpc::frame(message),
        }
    }

    /// The request's head for the server at `authority`, with `span`'s trace context when it
    /// is recorded.
    pub(crate) fn request(
        &self,
        scheme: &Scheme,
        authority: &Authority,
        span: &tracing::Span,
    ) -> Request<()> {
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(scheme.clone());
        uri.authority = Some(authority.clone());
        uri.path_and_query = Some(self.path.clone());
        let mut request = Request::new(());
        *request.method_mut() = Method::POST;
        *request.uri_mut() = Uri::from_parts(uri).expect("a scheme, an authority and a path");
        *request.headers_mut() = self.headers.clone();
        if let Some(trace) = propagation::trace_headers(span) {
            request.headers_mut().extend(trace);
        }
        request
    }
}
