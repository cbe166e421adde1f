//! The attempt timeout alone, over tower-test's mock, on a paused clock: every time below is
//! exact.

use std::time::Duration;

use tokio::time::Instant;
use tonic::{Code, Status};
use tower::{Layer, Service, ServiceExt};

use super::AttemptTimeoutLayer;
use crate::client::Call;
use crate::client::call::{AttemptNumber, Deadline, Param, PerAttemptTimeout, SetParam};
use crate::client::error::{CallError, Phase};
use crate::client::testing::{Below, Dropped, Handle, Msg, below, param};

const MS: Duration = Duration::from_millis(1);

fn timeout() -> (
    super::AttemptTimeout<Below<Msg, CallError>>,
    Handle<Msg>,
    Dropped,
) {
    let (inner, handle, dropped) = below();
    (AttemptTimeoutLayer.layer(inner), handle, dropped)
}

/// Attempt 3 of a call with `deadline_in` left and an attempt timeout of `timeout`.
fn request(deadline_in: Duration, timeout: Duration) -> Call<Msg> {
    let mut req = Call::new("q", Instant::now() + deadline_in, timeout);
    req.set_param(AttemptNumber(3));
    req
}

#[tokio::test(start_paused = true)]
async fn an_attempt_that_is_not_answered_ends_at_its_own_timeout_and_is_cancelled() {
    let (mut svc, mut handle, dropped) = timeout();
    let start = Instant::now();
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(1000 * MS, 100 * MS)),
    );
    let (seen, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(
        param::<Deadline>(&seen).0,
        start + 100 * MS,
        "the backend is sent the attempt's bound, not the call's"
    );
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), 100 * MS);
    assert!(
        matches!(error, CallError::AttemptTimeout { attempt: 3, after } if after == 100 * MS),
        "{error:?}"
    );
    assert_eq!(error.to_string(), "attempt 3 timed out after 100.0ms");
    assert!(error.retryable());
    assert_eq!(dropped.count(), 1, "the attempt below was cancelled");
}

#[tokio::test(start_paused = true)]
async fn an_attempt_is_cut_short_by_the_deadline_when_it_leaves_less() {
    let (mut svc, mut handle, dropped) = timeout();
    let start = Instant::now();
    let call = tokio::spawn(svc.ready().await.unwrap().call(request(40 * MS, 100 * MS)));
    let (seen, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(param::<Deadline>(&seen).0, start + 40 * MS);
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), 40 * MS);
    assert!(
        matches!(error, CallError::Deadline(Phase::DuringAttempt)),
        "{error:?}"
    );
    assert!(!error.retryable(), "the call has no time for another");
    assert_eq!(dropped.count(), 1);
}

#[tokio::test(start_paused = true)]
async fn an_answer_within_the_bound_passes_through() {
    let (mut svc, mut handle, dropped) = timeout();
    let call = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(1000 * MS, 100 * MS)),
    );
    let (_, reply) = handle.next_request().await.unwrap();
    tokio::time::advance(99 * MS).await;
    reply.send_response("done");
    assert_eq!(call.await.unwrap().unwrap(), "done");
    assert_eq!(dropped.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_backend_giving_up_at_the_sent_bound_counts_as_the_timeout_but_not_before() {
    let (mut svc, mut handle, _) = timeout();
    // CANCELLED within MIN_TIMEOUT (5 ms) of the bound: the backend (or tonic's timer for the
    // grpc-timeout sent) ran out of this attempt's time.
    let late = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(1000 * MS, 100 * MS)),
    );
    let (_, reply) = handle.next_request().await.unwrap();
    tokio::time::advance(96 * MS).await;
    reply.send_error(CallError::Status(Status::cancelled("timeout expired")));
    let error = late.await.unwrap().unwrap_err();
    assert!(
        matches!(error, CallError::AttemptTimeout { attempt: 3, .. }),
        "{error:?}"
    );

    // Long before the bound, CANCELLED is the backend's own answer.
    let early = tokio::spawn(
        svc.ready()
            .await
            .unwrap()
            .call(request(1000 * MS, 100 * MS)),
    );
    let (_, reply) = handle.next_request().await.unwrap();
    tokio::time::advance(10 * MS).await;
    reply.send_error(CallError::Status(Status::cancelled("went away")));
    let error = early.await.unwrap().unwrap_err();
    assert!(
        matches!(&error, CallError::Status(s) if s.code() == Code::Cancelled),
        "{error:?}"
    );
}

/// What the attempt timeout declares it reads and sets, and nothing more.
#[derive(Debug)]
struct Bare {
    deadline: Deadline,
    timeout: PerAttemptTimeout,
    number: AttemptNumber,
}

impl Param<Deadline> for Bare {
    fn param(&self) -> Deadline {
        self.deadline
    }
}

impl SetParam<Deadline> for Bare {
    fn set_param(&mut self, deadline: Deadline) {
        self.deadline = deadline;
    }
}

impl Param<PerAttemptTimeout> for Bare {
    fn param(&self) -> PerAttemptTimeout {
        self.timeout
    }
}

impl Param<AttemptNumber> for Bare {
    fn param(&self) -> AttemptNumber {
        self.number
    }
}

#[tokio::test(start_paused = true)]
async fn the_layer_needs_nothing_of_a_request_but_what_it_declares() {
    let (inner, mut handle, _) = below::<Msg, CallError, Bare>();
    let mut svc = AttemptTimeoutLayer.layer(inner);
    let start = Instant::now();
    let req = Bare {
        deadline: Deadline(start + 1000 * MS),
        timeout: PerAttemptTimeout(100 * MS),
        number: AttemptNumber(7),
    };
    let call = tokio::spawn(svc.ready().await.unwrap().call(req));
    let (seen, _never_answered) = handle.next_request().await.unwrap();
    assert_eq!(seen.deadline, Deadline(start + 100 * MS));
    let error = call.await.unwrap().unwrap_err();
    assert_eq!(error.to_string(), "attempt 7 timed out after 100.0ms");
}
