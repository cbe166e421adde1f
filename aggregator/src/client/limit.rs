//! A per-backend concurrency limit whose wait is bounded by the call's deadline.
//!
//! tower's `ConcurrencyLimit` waits for a permit in `poll_ready`, before it sees the request, so
//! it cannot know how long this call may wait; a call queued behind a slow backend would wait
//! past its deadline. Here the wait is part of `call`: past the deadline it gives up with
//! `DEADLINE_EXCEEDED`, naming `--backend-concurrency`. The permit is held until the inner
//! future ends (or is dropped, when the call is cancelled).

use std::sync::Arc;
use std::task::{Context, Poll};

use fanout_proto::limits::MIN_TIMEOUT;
use futures::future::{BoxFuture, FutureExt};
use tokio::sync::Semaphore;
use tower::{Layer, Service, ServiceExt};

use super::Bounded;
use super::error::{CallError, Phase};

/// Makes [`ConcurrencyLimit`]s sharing one set of slots.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    slots: Arc<Semaphore>,
    /// How many slots there are, for the error message.
    limit: usize,
}

impl ConcurrencyLimitLayer {
    pub fn new(slots: Arc<Semaphore>, limit: usize) -> Self {
        ConcurrencyLimitLayer { slots, limit }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            slots: self.slots.clone(),
            limit: self.limit,
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    slots: Arc<Semaphore>,
    limit: usize,
}

impl<S, M> Service<Bounded<M>> for ConcurrencyLimit<S>
where
    S: Service<Bounded<M>, Error = CallError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
    M: Send + 'static,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<S::Response, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        // The inner service is made ready once a slot is held, in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Bounded<M>) -> Self::Future {
        let (slots, limit, inner) = (self.slots.clone(), self.limit, self.inner.clone());
        async move {
            let slot = match tokio::time::timeout_at(req.deadline, slots.acquire_owned()).await {
                Ok(Ok(slot)) => slot,
                Ok(Err(_closed)) => {
                    return Err(CallError::Status(tonic::Status::unavailable(
                        "shutting down",
                    )));
                }
                Err(_elapsed) => return Err(CallError::NoSlot { limit }),
            };
            if req.left() < MIN_TIMEOUT {
                return Err(CallError::Deadline(Phase::WaitingForSlot));
            }
            let answer = inner.oneshot(req).await;
            drop(slot);
            answer
        }
        .boxed()
    }
}
