//! The concurrency limit layer alone, over tower-test's mock, on a paused clock: the wait for a
//! slot ends exactly when it should.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt};

use super::control::OPEN;
use super::{ConcurrencyLimit, ConcurrencyLimitLayer, Limit, Limiter};
use crate::client::Call;
use crate::client::call::{Deadline, Param};
use crate::client::error::{CallError, Phase};
use crate::client::testing::{Below, Handle, Msg, below, has_request};

const MS: Duration = Duration::from_millis(1);
const QUEUE_TIMEOUT: Duration = Duration::from_millis(50);

type Svc = ConcurrencyLimit<Below<Msg, CallError>>;

fn limit(limit: Limit, queue_timeout: Option<Duration>) -> (Svc, Handle<Msg>, Arc<Limiter>) {
    let limiter = Arc::new(Limiter::new("b".into(), limit, queue_timeout));
    let (inner, handle, _) = below();
    let svc = ConcurrencyLimitLayer::new(limiter.clone()).layer(inner);
    (svc, handle, limiter)
}

async fn call(svc: &mut Svc, deadline_in: Duration) -> JoinHandle<Result<Msg, CallError>> {
    let req = Call::new("q", Instant::now() + deadline_in, Duration::from_secs(1));
    tokio::spawn(svc.ready().await.unwrap().call(req))
}

#[tokio::test(start_paused = true)]
async fn a_third_call_over_a_limit_of_two_is_refused_after_the_queue_timeout() {
    let (mut svc, mut handle, limiter) = limit(Limit::Fixed(2), Some(QUEUE_TIMEOUT));
    let second = Duration::from_secs(1);
    let (_one, _two) = (call(&mut svc, second).await, call(&mut svc, second).await);
    let _held = (handle.next_request().await, handle.next_request().await);
    let start = Instant::now();
    let third = call(&mut svc, second).await;
    let error = third.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), QUEUE_TIMEOUT);
    assert!(
        matches!(
            error,
            CallError::OverLimit { limit: 2, adaptive: false, waited } if waited == QUEUE_TIMEOUT
        ),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "not sent: over its concurrency limit of 2 (--backend-concurrency) for 50.0ms (--queue-timeout)"
    );
    assert!(
        !has_request(&mut handle),
        "the third never reached the backend"
    );
    assert_eq!(limiter.over_limit.load(Relaxed), 1);
    assert_eq!(limiter.in_flight.load(Relaxed), 2);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_call_gets_the_slot_an_answer_frees() {
    let (mut svc, mut handle, limiter) = limit(Limit::Fixed(2), Some(QUEUE_TIMEOUT));
    let second = Duration::from_secs(1);
    let one = call(&mut svc, second).await;
    let _two = call(&mut svc, second).await;
    let (_, reply_one) = handle.next_request().await.unwrap();
    let _held = handle.next_request().await.unwrap();
    let start = Instant::now();
    let third = call(&mut svc, second).await;
    tokio::time::sleep(20 * MS).await;
    assert!(!has_request(&mut handle), "waiting for a slot");
    assert_eq!(limiter.queued.load(Relaxed), 1);
    reply_one.send_response("one");
    assert_eq!(one.await.unwrap().unwrap(), "one");
    let (_, reply_three) = handle.next_request().await.unwrap();
    assert_eq!(start.elapsed(), 20 * MS, "at once when the slot freed");
    reply_three.send_response("three");
    assert_eq!(third.await.unwrap().unwrap(), "three");
    assert_eq!(limiter.over_limit.load(Relaxed), 0);
    assert_eq!(limiter.queued.load(Relaxed), 0);
    assert_eq!(
        limiter.in_flight.load(Relaxed),
        1,
        "the second still holds its slot"
    );
}

#[tokio::test(start_paused = true)]
async fn the_wait_for_a_slot_ends_at_the_deadline_when_that_comes_first() {
    let (mut svc, mut handle, limiter) = limit(Limit::Fixed(2), Some(QUEUE_TIMEOUT));
    let second = Duration::from_secs(1);
    let (_one, _two) = (call(&mut svc, second).await, call(&mut svc, second).await);
    let _held = (handle.next_request().await, handle.next_request().await);
    let start = Instant::now();
    let error = call(&mut svc, 30 * MS).await.await.unwrap().unwrap_err();
    assert_eq!(start.elapsed(), 30 * MS);
    assert!(matches!(error, CallError::NoSlot { limit: 2 }), "{error:?}");
    assert_eq!(limiter.over_limit.load(Relaxed), 0, "not a queue timeout");
}

#[tokio::test(start_paused = true)]
async fn a_slot_that_frees_too_close_to_the_deadline_is_not_used() {
    let (mut svc, mut handle, _) = limit(Limit::Fixed(1), None);
    let one = call(&mut svc, Duration::from_secs(1)).await;
    let (_, reply) = handle.next_request().await.unwrap();
    let late = call(&mut svc, 30 * MS).await;
    // The slot frees with 2 ms left, less than the shortest attempt (5 ms).
    tokio::time::sleep(28 * MS).await;
    reply.send_response("one");
    one.await.unwrap().unwrap();
    let error = late.await.unwrap().unwrap_err();
    assert!(
        matches!(error, CallError::Deadline(Phase::WaitingForSlot)),
        "{error:?}"
    );
    assert!(!has_request(&mut handle));
}

#[tokio::test(start_paused = true)]
async fn an_adaptive_limit_admits_everything_while_open() {
    let (mut svc, mut handle, limiter) = limit(Limit::Auto, None);
    let mut calls = Vec::new();
    for _ in 0..200 {
        calls.push(call(&mut svc, Duration::from_secs(1)).await);
    }
    let start = Instant::now();
    let mut replies = Vec::new();
    for _ in 0..200 {
        replies.push(handle.next_request().await.unwrap().1);
    }
    assert_eq!(start.elapsed(), Duration::ZERO, "none waited for a slot");
    assert_eq!(limiter.in_flight.load(Relaxed), 200);
    assert_eq!((limiter.limit(), limiter.is_overloaded()), (OPEN, false));
    for reply in replies {
        reply.send_response("ok");
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), "ok");
    }
    assert_eq!(limiter.over_limit.load(Relaxed), 0);
    assert_eq!(limiter.in_flight.load(Relaxed), 0);
}

/// A request that carries a deadline and nothing else: all the limit layer declares it reads.
#[derive(Debug)]
struct OnlyADeadline(Deadline);

impl Param<Deadline> for OnlyADeadline {
    fn param(&self) -> Deadline {
        self.0
    }
}

#[tokio::test(start_paused = true)]
async fn the_layer_needs_nothing_of_a_request_but_its_deadline() {
    let limiter = Arc::new(Limiter::new(
        "b".into(),
        Limit::Fixed(1),
        Some(QUEUE_TIMEOUT),
    ));
    let (inner, mut handle, _) = below::<Msg, CallError, OnlyADeadline>();
    let mut svc = ConcurrencyLimitLayer::new(limiter).layer(inner);
    let in_a_second = || OnlyADeadline(Deadline(Instant::now() + Duration::from_secs(1)));
    let first = tokio::spawn(svc.ready().await.unwrap().call(in_a_second()));
    let (_, reply) = handle.next_request().await.unwrap();
    let start = Instant::now();
    let second = svc.ready().await.unwrap().call(in_a_second()).await;
    assert!(
        matches!(second, Err(CallError::OverLimit { limit: 1, .. })),
        "{second:?}"
    );
    assert_eq!(start.elapsed(), QUEUE_TIMEOUT);
    reply.send_response("answered");
    assert_eq!(first.await.unwrap().unwrap(), "answered");
}
