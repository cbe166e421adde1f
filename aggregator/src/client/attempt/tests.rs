//! The attempt layer alone, over tower-test's mock, on a paused clock.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceExt};

use super::AttemptLayer;
use crate::client::call::{AttemptNumber, Attempts};
use crate::client::error::{CallError, Phase};
use crate::client::testing::{Msg, below, has_request, param};
use crate::client::{Call, StackCounters};

const SECOND: Duration = Duration::from_secs(1);

/// An attempt layer over a mock answering `Msg`, with its counters.
fn attempt() -> (
    super::Attempt<crate::client::testing::Below<Msg, CallError>>,
    crate::client::testing::Handle<Msg>,
    Arc<StackCounters>,
) {
    let counters: Arc<StackCounters> = Arc::default();
    let (inner, handle, _) = below();
    let svc = AttemptLayer::new(counters.clone(), None).layer(inner);
    (svc, handle, counters)
}

#[tokio::test(start_paused = true)]
async fn an_attempt_with_no_time_left_is_not_made() {
    let (svc, mut handle, counters) = attempt();
    // Less than the shortest attempt there is (MIN_TIMEOUT, 5 ms) left.
    let req = Call::new("q", Instant::now() + Duration::from_millis(4), SECOND);
    let failed = svc.oneshot(req.clone()).await.unwrap_err();
    assert!(
        matches!(failed.error, CallError::Deadline(Phase::BeforeTurn)),
        "{:?}",
        failed.error
    );
    assert_eq!(
        failed.error.to_string(),
        "the call's deadline passed before this backend's turn came"
    );
    assert_eq!((failed.attempts, failed.stopped), (0, None));
    assert!(!has_request(&mut handle), "the backend was not called");
    assert_eq!(counters.attempts.load(Relaxed), 0);
    assert_eq!(param::<Attempts>(&req).made(), 0, "not numbered either");
}

#[tokio::test(start_paused = true)]
async fn a_later_attempt_with_no_time_left_says_it_was_between_attempts() {
    let (mut svc, mut handle, counters) = attempt();
    let req = Call::new("q", Instant::now() + Duration::from_millis(100), SECOND);
    let first = tokio::spawn(svc.ready().await.unwrap().call(req.clone()));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(CallError::Status(Status::unavailable("busy")));
    assert_eq!(first.await.unwrap().unwrap_err().attempts, 1);

    tokio::time::advance(Duration::from_millis(96)).await;
    let failed = svc.oneshot(req).await.unwrap_err();
    assert!(
        matches!(failed.error, CallError::Deadline(Phase::BeforeAttempt)),
        "{:?}",
        failed.error
    );
    assert_eq!(failed.attempts, 1);
    assert!(!has_request(&mut handle));
    assert_eq!(counters.attempts.load(Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn attempts_are_counted_and_numbered_and_the_winner_is_the_one_that_answered() {
    let (mut svc, mut handle, counters) = attempt();
    let req = Call::new("q", Instant::now() + SECOND, SECOND);
    // Two attempts of one call out at once (a try and its hedge), then a fresh call.
    let one = tokio::spawn(svc.ready().await.unwrap().call(req.clone()));
    let two = tokio::spawn(svc.ready().await.unwrap().call(req.clone()));
    let (seen1, reply1) = handle.next_request().await.unwrap();
    let (seen2, reply2) = handle.next_request().await.unwrap();
    assert_eq!(
        (
            param::<AttemptNumber>(&seen1).0,
            param::<AttemptNumber>(&seen2).0
        ),
        (1, 2)
    );
    assert_eq!(seen1.message, "q");

    reply2.send_response("second");
    let answer = two.await.unwrap().unwrap();
    assert_eq!(
        (answer.reply, answer.winner, answer.attempts),
        ("second", 2, 2)
    );
    assert!(!answer.from_cache && !answer.hedged);
    reply1.send_response("first");
    assert_eq!(one.await.unwrap().unwrap().winner, 1);

    let other = Call::new("r", Instant::now() + SECOND, SECOND);
    let three = tokio::spawn(svc.ready().await.unwrap().call(other));
    let (seen, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        param::<AttemptNumber>(&seen).0,
        1,
        "each call numbers its own attempts"
    );
    reply.send_response("other");
    let answer = three.await.unwrap().unwrap();
    assert_eq!((answer.winner, answer.attempts), (1, 1));
    assert_eq!(counters.attempts.load(Relaxed), 3, "the backend's count");
    assert_eq!(param::<Attempts>(&req).made(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_inner_error_comes_back_failed_with_the_attempts_made() {
    let (mut svc, mut handle, counters) = attempt();
    let req = Call::new("q", Instant::now() + SECOND, SECOND);
    let call = tokio::spawn(svc.ready().await.unwrap().call(req));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(CallError::Status(Status::internal("bug")));
    let failed = call.await.unwrap().unwrap_err();
    assert_eq!(failed.error.code(), Code::Internal);
    assert_eq!(failed.error.to_string(), "bug");
    assert_eq!(
        (failed.attempts, failed.stopped, failed.hedged),
        (1, None, false)
    );
    assert_eq!(counters.attempts.load(Relaxed), 1);
}
