//! Retries: which failures, how many attempts, how long to back off, and the budget that keeps
//! retries from turning an outage into a retry storm. [`Retries`] is the policy tower's
//! [`Retry`](tower::retry::Retry) layer asks after every attempt; [`RetryPolicy`] is its plain
//! data, from the flags.
//!
//! The budget is tower's [`TpsBudget`] (the Finagle/linkerd design), one per backend: every call
//! deposits, every retry withdraws, and retries may be at most `ratio` of calls plus
//! `min_per_sec` per second. When a backend is down for everyone, its retries stop at that rate
//! instead of multiplying its load by `max_attempts`, and it cannot spend the retries another,
//! merely flaky, backend needs.

use std::sync::Arc;
use std::time::Duration;

use fanout_proto::limits::MIN_TIMEOUT;
use rand::Rng;
use tokio::time::{Instant, Sleep};
use tower::retry::Policy;
use tower::retry::budget::{Budget, TpsBudget};

use super::call::{Deadline, Param, SetParam, Try};
use super::error::{CallError, Failed, Stop};
use super::limit::Limiter;
use super::{Answered, StackCounters, StackState};

/// Attempts and backoff; plain data from the flags.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts per backend per call, the first included (1 = no retries).
    pub max_attempts: u32,
    /// Backoff before the first retry; doubles each retry.
    pub backoff_base: Duration,
    /// The most a backoff grows to.
    pub backoff_cap: Duration,
    /// Retries allowed as a fraction of calls (0.2 = 20%).
    pub budget_ratio: f32,
    /// Retries allowed per second regardless of the ratio, so a quiet service can still retry.
    pub budget_min_per_sec: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            backoff_base: Duration::from_millis(20),
            backoff_cap: Duration::from_millis(500),
            budget_ratio: 0.2,
            budget_min_per_sec: 10,
        }
    }
}

/// How long a budget remembers a deposit: the retry budget and the hedge budget alike.
pub(super) const BUDGET_WINDOW: Duration = Duration::from_secs(10);

impl RetryPolicy {
    /// The backoff before retry number `retry` (1 = the first retry): exponential, capped, with
    /// "equal jitter": at least half the exponential step, plus a random part up to the other
    /// half. The random part spreads callers out; the fixed half keeps a retry from hitting an
    /// unavailable backend again at once.
    pub fn backoff<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let step = self
            .backoff_base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20))
            .min(self.backoff_cap);
        let half = step / 2;
        half + Duration::from_nanos(rng.random_range(0..=half.as_nanos() as u64))
    }

    /// A fresh budget for these settings.
    pub fn budget(&self) -> TpsBudget {
        TpsBudget::new(BUDGET_WINDOW, self.budget_min_per_sec, self.budget_ratio)
    }
}

/// The policy of one backend's retry layer. Tower clones it for every call.
#[derive(Debug, Clone)]
pub struct Retries {
    policy: RetryPolicy,
    budget: Arc<TpsBudget>,
    counters: Arc<StackCounters>,
    backend: Arc<str>,
    /// Whether the backend is overloaded now: an attempt that ran out of time in its line is
    /// not retried (the retry would join the same line).
    limiter: Arc<Limiter>,
}

impl Retries {
    pub fn new(state: &StackState) -> Self {
        Retries {
            policy: state.retry,
            budget: state.budget.clone(),
            counters: state.counters.clone(),
            backend: state.name.clone(),
            limiter: state.limiter.clone(),
        }
    }

    /// Why `failed`, of try `tried`, is not retried, or `None` to retry it after `backoff`.
    fn stop(
        &self,
        tried: u32,
        Deadline(deadline): Deadline,
        failed: &Failed,
        backoff: Duration,
    ) -> Option<Stop> {
        if tried >= self.policy.max_attempts {
            return Some(Stop::MaxAttempts(tried));
        }
        if matches!(failed.error, CallError::AttemptTimeout { .. }) && self.limiter.is_overloaded()
        {
            return Some(Stop::Overloaded);
        }
        if Instant::now() + backoff + MIN_TIMEOUT > deadline {
            return Some(Stop::NoTimeLeft { next: tried + 1 });
        }
        // Last: a token is spent only on a retry that will be made.
        if !self.budget.withdraw() {
            StackCounters::bump(&self.counters.retries_throttled);
            return Some(Stop::BudgetSpent);
        }
        None
    }
}

impl<Req, R> Policy<Req, Answered<R>, Failed> for Retries
where
    Req: Param<Try> + SetParam<Try> + Param<Deadline> + Clone,
{
    type Future = Sleep;

    fn retry(&mut self, req: &mut Req, result: &mut Result<Answered<R>, Failed>) -> Option<Sleep> {
        let Err(failed) = result else { return None };
        if !failed.error.retryable() {
            return None;
        }
        let Try { number: tried, .. } = req.param();
        let backoff = self.policy.backoff(tried, &mut rand::rng());
        if let Some(why) = self.stop(tried, req.param(), failed, backoff) {
            failed.stopped = Some(why);
            return None;
        }
        StackCounters::bump(&self.counters.retries);
        tracing::debug!(
            backend = &*self.backend,
            try_number = tried,
            ?backoff,
            error = %failed.error,
            "retrying"
        );
        req.set_param(Try {
            number: tried + 1,
            backoff,
        });
        Some(tokio::time::sleep(backoff))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        // Called before every try; the first one is the call itself, which earns the budget its
        // deposit.
        if Param::<Try>::param(req).number == 1 {
            self.budget.deposit();
        }
        Some(req.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn backoff_grows_to_the_cap_with_jitter() {
        let policy = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(5);
        for (retry, step) in [(1, 20), (2, 40), (3, 80), (6, 500), (30, 500)] {
            let step = Duration::from_millis(step);
            for _ in 0..100 {
                let b = policy.backoff(retry, &mut rng);
                assert!(b >= step / 2 && b <= step, "retry {retry}: {b:?}");
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_allows_the_ratio_plus_the_minimum() {
        let policy = RetryPolicy {
            budget_min_per_sec: 1,
            ..RetryPolicy::default()
        };
        let budget = policy.budget();
        for _ in 0..100 {
            budget.deposit();
        }
        let allowed = (0..1000).take_while(|_| budget.withdraw()).count();
        // 20% of 100 calls, plus the 1/s minimum over the 10 s window.
        assert_eq!(allowed, 30);
    }
}

#[cfg(test)]
mod layer_tests;
