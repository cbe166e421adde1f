//! How many calls one backend gets at once: a fixed `--backend-concurrency N`, or `auto`, a
//! limit that refuses nothing until the backend is shown to be overloaded (see [`control`]),
//! and how long a call may wait for a slot (see [`slots`]).
//!
//! - [`control`]: the adaptive limit's decisions, a pure state machine over what the
//!   backend's calls did;
//! - [`slots`]: the semaphore the limit sizes, the wait for a slot, the door's reservations;
//! - this module: the flag, and the layer that holds a slot for each attempt.
//!
//! Why not a crate: tower-acc (Vegas, Gradient2, AIMD) and tower-resilience-adaptive (AIMD,
//! Vegas) are per-call algorithms that always enforce their limit, starting low, and judge
//! each answer against the fastest seen (Vegas) or a short average against a long one
//! (Gradient2). In front of a backend with a heavy tail or replicas of mixed speed, a single
//! fast answer makes every median one look like a line; a limit that starts low refuses a
//! healthy burst; and neither waits for a slot within a call's deadline, nor tells the door
//! whether a backend is overloaded, which is what makes refusing a whole call right. Both
//! crates were run through this module's simulated scenarios (BENCHMARKS.md §10) before
//! writing [`control`].

pub mod control;
pub mod slots;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use fanout_proto::limits::MIN_TIMEOUT;
use futures::future::{BoxFuture, FutureExt};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

pub use self::slots::{AUTO_QUEUE_TIMEOUT, Limiter, Reservation, Slot};

use super::call::{Deadline, Param};
use super::error::{CallError, Phase};

/// `--backend-concurrency`: a fixed number of calls in flight at one backend, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Fixed(usize),
    Auto,
}

impl FromStr for Limit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(auto_or_count(s, MAX_LIMIT)?.map_or(Limit::Auto, Limit::Fixed))
    }
}

/// A flag that is `auto` (`None`) or a number of calls from 1 to `max`.
pub(crate) fn auto_or_count(s: &str, max: usize) -> Result<Option<usize>, String> {
    match s.trim() {
        "auto" => Ok(None),
        n => match n.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "`{s}` is neither `auto` nor a number of calls from 1 to {max}"
            )),
        },
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::Fixed(n) => write!(f, "{n}"),
            Limit::Auto => f.write_str("auto"),
        }
    }
}

/// The highest limit, fixed or adaptive.
pub const MAX_LIMIT: usize = 100_000;

/// Makes [`ConcurrencyLimit`]s over one backend's [`Limiter`].
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    limiter: Arc<Limiter>,
}

impl ConcurrencyLimitLayer {
    pub fn new(limiter: Arc<Limiter>) -> Self {
        ConcurrencyLimitLayer { limiter }
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> ConcurrencyLimit<S> {
        ConcurrencyLimit {
            inner,
            limiter: self.limiter.clone(),
        }
    }
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    Req: Param<Deadline> + Send + 'static,
    S: Service<Req, Error = CallError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send,
{
    type Response = S::Response;
    type Error = CallError;
    type Future = BoxFuture<'static, Result<S::Response, CallError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), CallError>> {
        // The inner service is made ready once a slot is held, in `call`.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (limiter, inner) = (self.limiter.clone(), self.inner.clone());
        let deadline: Deadline = req.param();
        async move {
            let asked = Instant::now();
            let slot = limiter.acquire(deadline.0).await?;
            let waited = asked.elapsed();
            if !waited.is_zero() {
                tracing::Span::current().record("queued_ms", waited.as_secs_f64() * 1e3);
            }
            if deadline.left() < MIN_TIMEOUT {
                return Err(CallError::Deadline(Phase::WaitingForSlot));
            }
            let answer = inner.oneshot(req).await;
            match &answer {
                Ok(_) => slot.answered(),
                Err(
                    CallError::AttemptTimeout { .. } | CallError::Deadline(Phase::DuringAttempt),
                ) => slot.given_up(),
                Err(_) => {}
            }
            answer
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_read_auto_or_a_number() {
        assert_eq!("auto".parse(), Ok(Limit::Auto));
        assert_eq!("64".parse(), Ok(Limit::Fixed(64)));
        for bad in ["0", "-3", "lots", "100001"] {
            assert!(
                bad.parse::<Limit>().unwrap_err().contains("neither `auto`"),
                "{bad}"
            );
        }
    }
}

#[cfg(test)]
mod layer_tests;
