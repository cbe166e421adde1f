//! tower's retry layer with our policy, alone over tower-test's mock standing for the layers
//! below, on a paused clock: the backoff a retry waited is read off the clock.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;
use tonic::Status;
use tower::retry::budget::Budget;
use tower::retry::{Retry, RetryLayer};
use tower::{Layer, Service, ServiceExt};

use super::{Retries, RetryPolicy};
use crate::client::call::Try;
use crate::client::error::{CallError, Failed, Stop};
use crate::client::hedge::HedgePolicy;
use crate::client::limit::Limit;
use crate::client::testing::{Below, Handle, Msg, answered, below, has_request, param};
use crate::client::{Answered, Call, StackState};

const MS: Duration = Duration::from_millis(1);

type Svc = Retry<Retries, Below<Answered<Msg>, Failed>>;

/// A retry layer with `policy` (a 20 ms backoff base by default), and the backend's state.
fn retry(policy: RetryPolicy) -> (Svc, Handle<Answered<Msg>>, StackState) {
    let state = StackState::new(
        "b",
        policy,
        HedgePolicy::default(),
        Limit::Fixed(10),
        None,
        None,
    );
    let (inner, handle, _) = below();
    let svc = RetryLayer::new(Retries::new(&state)).layer(inner);
    (svc, handle, state)
}

fn request(deadline_in: Duration) -> Call<Msg> {
    Call::new("q", Instant::now() + deadline_in, Duration::from_secs(1))
}

fn unavailable() -> CallError {
    CallError::Status(Status::unavailable("try again"))
}

#[tokio::test(start_paused = true)]
async fn retryable_codes_are_retried_after_a_backoff_within_the_policy_s_bounds() {
    let (mut svc, mut handle, state) = retry(RetryPolicy::default());
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(Duration::from_secs(5))),
    );
    let (first, reply) = handle.next_request().await.unwrap();
    assert_eq!(param::<Try>(&first), Try::FIRST);
    reply.send_error(unavailable());
    // Equal jitter: half the step at least, the step at most (20 ms, then 40 ms).
    for (attempt, step) in [(2, 20 * MS), (3, 40 * MS)] {
        let failed_at = Instant::now();
        let (again, reply) = handle.next_request().await.unwrap();
        let waited = failed_at.elapsed();
        let again = param::<Try>(&again);
        assert_eq!(again.number, attempt);
        assert!(
            again.backoff >= step / 2 && again.backoff <= step,
            "attempt {attempt}: {:?}",
            again.backoff
        );
        // The paused clock's timer fires on the millisecond at or after the backoff.
        assert!(
            waited >= again.backoff && waited < again.backoff + MS,
            "attempt {attempt}: waited {waited:?} for a backoff of {:?}",
            again.backoff
        );
        if attempt == 2 {
            reply.send_error(CallError::Unreachable(Status::unavailable("refused")));
        } else {
            reply.send_response(answered("third time", 3));
        }
    }
    let answer = call.await.unwrap().unwrap();
    assert_eq!(answer.reply, "third time");
    assert_eq!(state.counters.retries.load(Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn non_retryable_codes_are_not_retried() {
    let (mut svc, mut handle, state) = retry(RetryPolicy::default());
    for error in [
        CallError::Status(Status::internal("bug")),
        CallError::Status(Status::not_found("no such key")),
        CallError::Down("all down".into()),
        CallError::NoSlot { limit: 2 },
    ] {
        let want = error.to_string();
        let call = tokio::spawn(
            svc.ready()
                .await
                .unwrap()
                .call(request(Duration::from_secs(5))),
        );
        let (_, reply) = handle.next_request().await.unwrap();
        reply.send_error(error);
        let failed = call.await.unwrap().unwrap_err();
        assert_eq!(failed.error.to_string(), want);
        assert_eq!(
            failed.stopped, None,
            "{want}: not a retry refused, no retry at all"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!has_request(&mut handle), "{want}");
    }
    assert_eq!(state.counters.retries.load(Relaxed), 0);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_are_honoured() {
    let policy = RetryPolicy {
        max_attempts: 2,
        ..RetryPolicy::default()
    };
    let (mut svc, mut handle, state) = retry(policy);
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(Duration::from_secs(5))),
    );
    for attempt in 1..=2 {
        let (seen, reply) = handle.next_request().await.unwrap();
        assert_eq!(param::<Try>(&seen).number, attempt);
        reply.send_error(unavailable());
    }
    let failed = call.await.unwrap().unwrap_err();
    assert_eq!(failed.stopped, Some(Stop::MaxAttempts(2)));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!has_request(&mut handle));
    assert_eq!(state.counters.retries.load(Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn no_retry_whose_backoff_would_not_fit_before_the_deadline() {
    // The first backoff is 50 to 100 ms; with 40 ms left, no retry can fit.
    let policy = RetryPolicy {
        backoff_base: 100 * MS,
        ..RetryPolicy::default()
    };
    let (mut svc, mut handle, state) = retry(policy);
    let call = tokio::spawn(svc.ready().await.unwrap().call(request(40 * MS)));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(unavailable());
    let failed = call.await.unwrap().unwrap_err();
    assert_eq!(failed.stopped, Some(Stop::NoTimeLeft { next: 2 }));
    assert!(!has_request(&mut handle));
    assert_eq!(state.counters.retries.load(Relaxed), 0);
    assert_eq!(
        state.counters.retries_throttled.load(Relaxed),
        0,
        "no token was asked for a retry that could not be made"
    );
}

#[tokio::test(start_paused = true)]
async fn a_spent_retry_budget_refuses_the_retry_and_counts_it() {
    let (mut svc, mut handle, state) = retry(RetryPolicy::default());
    // The reserve (10 a second over 10 s) spent; the call's own deposit (a fifth of a retry)
    // does not buy one back.
    let spent = (0..1000).take_while(|_| state.budget.withdraw()).count();
    assert_eq!(spent, 100);
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(Duration::from_secs(5))),
    );
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(unavailable());
    let failed = call.await.unwrap().unwrap_err();
    assert_eq!(failed.stopped, Some(Stop::BudgetSpent));
    assert!(!has_request(&mut handle));
    assert_eq!(state.counters.retries_throttled.load(Relaxed), 1);
    assert_eq!(state.counters.retries.load(Relaxed), 0);
}
