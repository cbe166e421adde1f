//! What the layers' unit tests share: tower-test's mock service below the layer under test (for
//! requests of the stack's type, [`Call`], unless a test names its own), with a count of the
//! futures it returned that were dropped unanswered (an attempt cancelled by a timeout, a lost
//! hedge).

use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use tower::Service;
use tower_test::mock;

use super::call::Param;
use super::error::{CallError, Failed};
use super::{Answered, Call};

/// The message the tests send down.
pub type Msg = &'static str;

/// The test's end of the mock: each request, and where to send its answer.
pub type Handle<R, Q = Call<Msg>> = mock::Handle<Q, R>;

/// The errors a layer expects from below, made from what the test sends with
/// `SendResponse::send_error` (a [`CallError`]).
pub trait FromMock: Sized {
    fn from_mock(e: tower::BoxError) -> Self;
}

impl FromMock for CallError {
    fn from_mock(e: tower::BoxError) -> Self {
        match e.downcast::<CallError>() {
            Ok(e) => *e,
            // The handle or a `SendResponse` was dropped: not an answer a test means to give.
            Err(other) => CallError::Status(tonic::Status::unknown(format!("mock: {other}"))),
        }
    }
}

/// Below the attempt layer an error is a `Failed` of one attempt.
impl FromMock for Failed {
    fn from_mock(e: tower::BoxError) -> Self {
        Failed {
            error: CallError::from_mock(e),
            attempts: 1,
            stopped: None,
            hedged: false,
        }
    }
}

/// tower-test's mock taking requests `Q`, answering `R` or failing with `E`; every future it
/// returns is watched.
pub struct Below<R, E, Q = Call<Msg>> {
    mock: mock::Mock<Q, R>,
    dropped: Dropped,
    error: PhantomData<fn() -> E>,
}

impl<R, E, Q> Clone for Below<R, E, Q> {
    fn clone(&self) -> Self {
        Below {
            mock: self.mock.clone(),
            dropped: self.dropped.clone(),
            error: PhantomData,
        }
    }
}

/// How many of the mock's futures were dropped before their answer came.
#[derive(Debug, Clone, Default)]
pub struct Dropped(Arc<AtomicUsize>);

impl Dropped {
    pub fn count(&self) -> usize {
        self.0.load(Relaxed)
    }
}

/// Counts its future as dropped unanswered unless disarmed.
struct Watch(Option<Dropped>);

impl Watch {
    /// The answer came.
    fn disarm(mut self) {
        self.0.take();
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            d.0.fetch_add(1, Relaxed);
        }
    }
}

/// A mock service, its handle, and its count of futures dropped unanswered.
pub fn below<R, E, Q>() -> (Below<R, E, Q>, Handle<R, Q>, Dropped) {
    let (mock, handle) = mock::pair();
    let dropped = Dropped::default();
    let below = Below {
        mock,
        dropped: dropped.clone(),
        error: PhantomData,
    };
    (below, handle, dropped)
}

impl<R, E, Q> Service<Q> for Below<R, E, Q>
where
    R: Send + 'static,
    E: FromMock + Send + 'static,
{
    type Response = R;
    type Error = E;
    type Future = BoxFuture<'static, Result<R, E>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.mock.poll_ready(cx).map_err(E::from_mock)
    }

    fn call(&mut self, req: Q) -> Self::Future {
        let answer = self.mock.call(req);
        let watch = Watch(Some(self.dropped.clone()));
        async move {
            let result = answer.await;
            watch.disarm();
            result.map_err(E::from_mock)
        }
        .boxed()
    }
}

/// A reply as the attempt layer gives it: `reply`, from attempt `winner`.
pub fn answered(reply: Msg, winner: u32) -> Answered<Msg> {
    Answered {
        reply,
        attempts: winner,
        from_cache: false,
        winner,
        hedged: false,
    }
}

/// Whether the mock has a request waiting (without waiting for one).
pub fn has_request<R, Q>(handle: &mut Handle<R, Q>) -> bool {
    matches!(handle.poll_request(), Poll::Ready(Some(_)))
}

/// The value of type `T` a request carries: `param::<Deadline>(&req)`.
pub fn param<T>(req: &impl Param<T>) -> T {
    req.param()
}
