//! `x-process-time`: a tower layer that stamps every response with the time the server spent on
//! the call (the tutorials' timing middleware) and logs one line per call at debug level.
//!
//! For a unary call the header is the whole call. For a server-streaming call the headers leave
//! when the handler returns its stream, so the header gives the time to the start of the stream.
//!
//! The log line is written when the call ends, not when its headers leave: a gRPC status comes
//! in the trailers after the last message (or, for a call that fails before any, in a
//! trailers-only reply's headers), so the line waits for the response body's end to say which
//! status the call ended with and how long the whole call took. A body dropped before its end
//! (the client cancelled or hung up) is logged as CANCELLED. With metrics on, the same end
//! records the call in `rpc_server_call_duration_seconds` ([`crate::metrics`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame, SizeHint};
use tower::{Layer, Service};

use crate::metrics::{CallMethod, ServerCalls};

/// The response header name.
pub const HEADER: &str = "x-process-time";

/// Adds [`HEADER`] to responses; see the module docs.
#[derive(Debug, Clone, Default)]
pub struct ProcessTimeLayer {
    calls: Option<Arc<ServerCalls>>,
}

impl ProcessTimeLayer {
    /// Also records every call's duration and status in `calls`.
    pub fn recording(calls: Option<Arc<ServerCalls>>) -> Self {
        ProcessTimeLayer { calls }
    }
}

impl<S> Layer<S> for ProcessTimeLayer {
    type Service = ProcessTime<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ProcessTime {
            inner,
            calls: self.calls.clone(),
        }
    }
}

/// The service made by [`ProcessTimeLayer`].
#[derive(Debug, Clone)]
pub struct ProcessTime<S> {
    inner: S,
    calls: Option<Arc<ServerCalls>>,
}

impl<S, B, RB> Service<Request<B>> for ProcessTime<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
{
    type Response = Response<CallBody<RB>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Only pay for the path when the per-call log line will be written.
        let path = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().path().to_owned());
        let record = self.calls.as_ref().map(|calls| {
            let method = calls.method(req.uri().path());
            (calls.clone(), method)
        });
        ResponseFuture {
            inner: self.inner.call(req),
            start: Instant::now(),
            path,
            record,
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
        record: Option<(Arc<ServerCalls>, CallMethod)>,
    }

    // A call whose handler was dropped before it answered (the client cancelled or hung up).
    impl<F> PinnedDrop for ResponseFuture<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(end) = CallEnd::new(this.path.take(), this.record.take(), *this.start) {
                end.log(CANCELLED);
            }
        }
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<CallBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut res = std::task::ready!(this.inner.poll(cx))?;
        let ms = this.start.elapsed().as_secs_f64() * 1e3;
        if let Ok(v) = HeaderValue::from_str(&format!("{ms:.3}ms")) {
            res.headers_mut().insert(HEADER, v);
        }
        let end = CallEnd::new(this.path.take(), this.record.take(), *this.start).and_then(|end| {
            // A trailers-only reply (a call that failed before any message) carries its status
            // in its headers, and its body ends without trailers.
            match grpc_status(res.headers()) {
                Some(status) => {
                    end.log(status);
                    None
                }
                None => Some(end),
            }
        });
        Poll::Ready(Ok(res.map(|inner| CallBody { inner, end })))
    }
}

/// The `grpc-status` a header or trailer map carries, if any.
fn grpc_status(map: &HeaderMap) -> Option<&str> {
    map.get("grpc-status").and_then(|v| v.to_str().ok())
}

/// What the call's log line and its metric need once the call ends.
#[derive(Debug)]
struct CallEnd {
    /// For the log line, when it is written.
    path: Option<String>,
    /// For the duration histogram, when metrics are on.
    record: Option<(Arc<ServerCalls>, CallMethod)>,
    start: Instant,
}

impl CallEnd {
    /// Something to do at the call's end, if anything.
    fn new(
        path: Option<String>,
        record: Option<(Arc<ServerCalls>, CallMethod)>,
        start: Instant,
    ) -> Option<Self> {
        (path.is_some() || record.is_some()).then_some(CallEnd {
            path,
            record,
            start,
        })
    }

    fn log(self, grpc_status: &str) {
        let took = self.start.elapsed();
        if let Some((calls, method)) = &self.record {
            calls.observe(method, grpc_status.parse().unwrap_or(2), took);
        }
        if let Some(path) = self.path {
            let took_ms = took.as_secs_f64() * 1e3;
            tracing::debug!(path, grpc_status, took_ms, "call");
        }
    }
}

/// gRPC's codes for the ends that carry no status: CANCELLED for a body dropped before its end
/// (the client went away), UNKNOWN for one that ended or failed without trailers.
const CANCELLED: &str = "1";
const UNKNOWN: &str = "2";

pin_project_lite::pin_project! {
    /// A response body that logs the call's line (see the module docs) at its end.
    pub struct CallBody<B> {
        #[pin]
        inner: B,
        end: Option<CallEnd>,
    }

    impl<B> PinnedDrop for CallBody<B> {
        fn drop(this: Pin<&mut Self>) {
            if let Some(end) = this.project().end.take() {
                end.log(CANCELLED);
            }
        }
    }
}

impl<B: Body> Body for CallBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.inner.poll_frame(cx));
        if this.end.is_some() {
            let status = match &frame {
                Some(Ok(f)) => f.trailers_ref().map(|t| grpc_status(t).unwrap_or(UNKNOWN)),
                Some(Err(_)) | None => Some(UNKNOWN),
            };
            if let Some(status) = status
                && let Some(end) = this.end.take()
            {
                end.log(status);
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http::HeaderMap;
    use http_body::{Body, Frame};
    use tower::{Layer, Service, ServiceExt};

    use super::*;

    /// A response body of frames given in advance: data, then trailers.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(Ok))
        }
    }

    fn trailers(status: &str) -> Frame<Bytes> {
        let mut t = HeaderMap::new();
        t.insert("grpc-status", status.parse().unwrap());
        Frame::trailers(t)
    }

    #[derive(Clone, Default)]
    struct Log(Arc<Mutex<Vec<u8>>>);

    impl Write for Log {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What `f` logs at debug level.
    fn logged(f: impl FnOnce()) -> String {
        let log = Log::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        String::from_utf8(log.0.lock().unwrap().clone()).unwrap()
    }

    /// Serves one call whose response is `headers` then `frames`, reads the whole body, and
    /// returns the debug log the layer wrote.
    fn one_call(headers: &[(&str, &str)], frames: Vec<Frame<Bytes>>) -> String {
        let mut head = Response::builder();
        for (k, v) in headers {
            head = head.header(*k, *v);
        }
        let mut response = Some(head.body(Frames(frames.into())).unwrap());
        let inner = tower::service_fn(move |_: Request<()>| {
            let response = response.take().expect("one call");
            async move { Ok::<_, std::convert::Infallible>(response) }
        });
        logged(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut svc = ProcessTimeLayer::default().layer(inner);
                let res = svc
                    .ready()
                    .await
                    .unwrap()
                    .call(Request::new(()))
                    .await
                    .unwrap();
                assert!(res.headers().contains_key(HEADER));
                let mut body = res.into_body();
                while std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))
                    .await
                    .is_some()
                {}
            });
        })
    }

    #[test]
    fn the_status_logged_is_the_one_in_the_trailers() {
        let log = one_call(
            &[],
            vec![Frame::data(Bytes::from_static(b"x")), trailers("5")],
        );
        assert!(log.contains("grpc_status=\"5\""), "{log}");
        assert_eq!(log.lines().count(), 1, "one line a call: {log}");
    }

    #[test]
    fn a_trailers_only_reply_logs_the_status_in_its_headers() {
        let log = one_call(&[("grpc-status", "3")], vec![]);
        assert!(log.contains("grpc_status=\"3\""), "{log}");
    }

    #[test]
    fn a_body_dropped_before_its_end_logs_cancelled() {
        let log = logged(|| {
            let body = Frames(vec![Frame::data(Bytes::from_static(b"x")), trailers("0")].into());
            let end = CallEnd {
                path: Some("/p".into()),
                record: None,
                start: Instant::now(),
            };
            drop(CallBody {
                inner: body,
                end: Some(end),
            });
        });
        assert!(log.contains("grpc_status=\"1\""), "{log}");
    }

    #[test]
    fn a_success_logs_ok() {
        let log = one_call(
            &[],
            vec![Frame::data(Bytes::from_static(b"x")), trailers("0")],
        );
        assert!(log.contains("grpc_status=\"0\""), "{log}");
    }
}
