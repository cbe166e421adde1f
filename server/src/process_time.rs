//! `x-process-time`: a tower layer that stamps every response with the time the server spent on
//! the call (the tutorials' timing middleware) and logs one line per call at debug level.
//!
//! For a unary call that is the whole call. For a server-streaming call the headers leave when
//! the handler returns its stream, so the header gives the time to the start of the stream.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderValue, Request, Response};
use tower::{Layer, Service};

/// The response header name.
pub const HEADER: &str = "x-process-time";

/// Adds [`HEADER`] to responses; see the module docs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessTimeLayer;

impl<S> Layer<S> for ProcessTimeLayer {
    type Service = ProcessTime<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ProcessTime { inner }
    }
}

/// The service made by [`ProcessTimeLayer`].
#[derive(Debug, Clone)]
pub struct ProcessTime<S> {
    inner: S,
}

impl<S, B, RB> Service<Request<B>> for ProcessTime<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Only pay for the path when the per-call log line will be written.
        let path = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().path().to_owned());
        ResponseFuture {
            inner: self.inner.call(req),
            start: Instant::now(),
            path,
        }
    }
}

pin_project_lite::pin_project! {
    /// Response future of [`ProcessTime`].
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        start: Instant,
        path: Option<String>,
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        let took = this.start.elapsed();
        let ms = took.as_secs_f64() * 1e3;
        if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}ms")) {
            res.headers_mut().insert(HEADER, v);
        }
        if let Some(path) = this.path.take() {
            // A trailers-only response (an error) carries grpc-status in its headers.
            let status = res
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("0");
            tracing::debug!(path, grpc_status = status, took_ms = ms, "call");
        }
        Poll::Ready(Ok(res))
    }
}
