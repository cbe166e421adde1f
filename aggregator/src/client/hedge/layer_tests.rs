//! The hedge layer alone, over tower-test's mock standing for the attempt layer, on a paused
//! clock.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio::time::Instant;
use tower::retry::budget::Budget;
use tower::{Layer, Service, ServiceExt};

use super::{Hedge, HedgeAfter, HedgeLayer, HedgePolicy, Hedging};
use crate::client::call::{AttemptNumber, IsHedge, SetParam, Try};
use crate::client::error::Failed;
use crate::client::testing::{Below, Dropped, Handle, Msg, answered, below, has_request, param};
use crate::client::{Answered, Call, StackCounters};

const MS: Duration = Duration::from_millis(1);
const HEDGE_AFTER: Duration = Duration::from_millis(20);

struct Setup {
    svc: Hedge<Below<Answered<Msg>, Failed>>,
    handle: Handle<Answered<Msg>>,
    dropped: Dropped,
    hedging: Arc<Hedging>,
    counters: Arc<StackCounters>,
}

/// A hedge layer that hedges once after 20 ms.
fn hedge() -> Setup {
    let counters: Arc<StackCounters> = Arc::default();
    let policy = HedgePolicy {
        after: Some(HedgeAfter::Fixed(HEDGE_AFTER)),
        ..HedgePolicy::default()
    };
    let hedging = Arc::new(Hedging::new(policy, counters.clone()));
    let (inner, handle, dropped) = below();
    Setup {
        svc: HedgeLayer::new(hedging.clone()).layer(inner),
        handle,
        dropped,
        hedging,
        counters,
    }
}

fn request() -> Call<Msg> {
    Call::new(
        "q",
        Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    )
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_hedged_after_the_delay_and_the_hedge_wins() {
    let Setup {
        mut svc,
        mut handle,
        dropped,
        counters,
        ..
    } = hedge();
    let call = tokio::spawn(svc.ready().await.unwrap().call(request()));
    let (first, _slow) = handle.next_request().await.unwrap();
    let start = Instant::now();
    assert!(!param::<IsHedge>(&first).0);
    let (second, reply) = handle.next_request().await.unwrap();
    assert_eq!(
        start.elapsed(),
        HEDGE_AFTER,
        "the hedge goes out at the delay"
    );
    assert!(param::<IsHedge>(&second).0 && second.message == "q");
    assert_eq!(counters.hedges.load(Relaxed), 1);

    reply.send_response(answered("from the hedge", 2));
    let answer = call.await.unwrap().unwrap();
    assert_eq!((answer.reply, answer.winner), ("from the hedge", 2));
    assert!(answer.hedged);
    assert_eq!(counters.hedges_won.load(Relaxed), 1);
    assert_eq!(dropped.count(), 1, "the slow first attempt was cancelled");
}

#[tokio::test(start_paused = true)]
async fn the_first_attempt_answering_after_the_hedge_went_out_wins_and_cancels_it() {
    let Setup {
        mut svc,
        mut handle,
        dropped,
        counters,
        ..
    } = hedge();
    let call = tokio::spawn(svc.ready().await.unwrap().call(request()));
    let (_, reply) = handle.next_request().await.unwrap();
    let (second, _hedge) = handle.next_request().await.unwrap();
    assert!(param::<IsHedge>(&second).0);
    tokio::time::advance(5 * MS).await;
    reply.send_response(answered("from the first", 1));
    let answer = call.await.unwrap().unwrap();
    assert_eq!((answer.reply, answer.winner), ("from the first", 1));
    assert!(answer.hedged, "a hedge was sent, though it lost");
    assert_eq!(counters.hedges.load(Relaxed), 1);
    assert_eq!(counters.hedges_won.load(Relaxed), 0);
    assert_eq!(dropped.count(), 1, "the hedge was cancelled");
}

#[tokio::test(start_paused = true)]
async fn no_hedge_when_the_first_attempt_answers_before_the_delay() {
    let Setup {
        mut svc,
        mut handle,
        dropped,
        counters,
        ..
    } = hedge();
    let call = tokio::spawn(svc.ready().await.unwrap().call(request()));
    let (_, reply) = handle.next_request().await.unwrap();
    tokio::time::advance(HEDGE_AFTER - MS).await;
    reply.send_response(answered("in time", 1));
    let answer = call.await.unwrap().unwrap();
    assert!(!answer.hedged);
    assert_eq!(answer.winner, 1);
    tokio::time::sleep(10 * HEDGE_AFTER).await;
    assert!(!has_request(&mut handle), "no hedge, then or later");
    assert_eq!(counters.hedges.load(Relaxed), 0);
    assert_eq!(counters.hedges_refused.load(Relaxed), 0);
    assert_eq!(dropped.count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_spent_hedge_budget_sends_no_hedge_and_counts_the_refusal() {
    let Setup {
        mut svc,
        mut handle,
        hedging,
        counters,
        ..
    } = hedge();
    // Spend the budget's reserve (1 a second over 10 s); the call's own deposit (5% of a hedge)
    // does not buy one back.
    let spent = (0..1000).take_while(|_| hedging.budget.withdraw()).count();
    assert_eq!(spent, 10);
    let call = tokio::spawn(svc.ready().await.unwrap().call(request()));
    let (_, reply) = handle.next_request().await.unwrap();
    tokio::time::sleep(HEDGE_AFTER + 30 * MS).await;
    assert!(!has_request(&mut handle), "no second attempt");
    assert_eq!(counters.hedges_refused.load(Relaxed), 1);
    assert_eq!(counters.hedges.load(Relaxed), 0);
    reply.send_response(answered("alone", 1));
    let answer = call.await.unwrap().unwrap();
    assert!(!answer.hedged);
    assert_eq!(answer.reply, "alone");
}

#[tokio::test(start_paused = true)]
async fn a_request_s_own_delay_overrides_the_backend_s_and_zero_turns_hedging_off() {
    let Setup {
        mut svc,
        mut handle,
        counters,
        ..
    } = hedge();
    let own = request().hedge_delay(Some(50 * MS));
    let call = tokio::spawn(svc.ready().await.unwrap().call(own));
    let (_, _slow) = handle.next_request().await.unwrap();
    let start = Instant::now();
    let (_, reply) = handle.next_request().await.unwrap();
    assert_eq!(start.elapsed(), 50 * MS);
    reply.send_response(answered("hedge", 2));
    assert!(call.await.unwrap().unwrap().hedged);

    let off = request().hedge_delay(Some(Duration::ZERO));
    let call = tokio::spawn(svc.ready().await.unwrap().call(off));
    let (_, reply) = handle.next_request().await.unwrap();
    tokio::time::sleep(10 * HEDGE_AFTER).await;
    assert!(!has_request(&mut handle));
    reply.send_response(answered("alone", 1));
    assert!(!call.await.unwrap().unwrap().hedged);
    assert_eq!(counters.hedges.load(Relaxed), 1);
}

/// With the attempt layer below numbering the call's attempts (as in the stack), in a retry's
/// try the first attempt is not number 1: a win is a hedge's because the hedge layer tagged the
/// attempt as one, not because of its number (this counted a lost hedge as won before).
#[tokio::test(start_paused = true)]
async fn in_a_retried_try_the_first_attempt_winning_is_not_a_hedge_won() {
    use crate::client::attempt::AttemptLayer;
    use crate::client::error::CallError;

    let counters: Arc<StackCounters> = Arc::default();
    let policy = HedgePolicy {
        after: Some(HedgeAfter::Fixed(HEDGE_AFTER)),
        ..HedgePolicy::default()
    };
    let hedging = Arc::new(Hedging::new(policy, counters.clone()));
    let (inner, mut handle, _) = below::<Msg, CallError, Call<Msg>>();
    let mut svc =
        HedgeLayer::new(hedging).layer(AttemptLayer::new(counters.clone(), None).layer(inner));

    // Try 1: one attempt, failed before the hedge delay.
    let mut req = request();
    let try1 = tokio::spawn(svc.ready().await.unwrap().call(req.clone()));
    let (_, reply) = handle.next_request().await.unwrap();
    reply.send_error(CallError::Status(tonic::Status::unavailable("busy")));
    assert!(try1.await.unwrap().is_err());

    // Try 2 (as the retry layer sends it): slow, so hedged; its first attempt answers first.
    req.set_param(Try {
        number: 2,
        backoff: Duration::ZERO,
    });
    let try2 = tokio::spawn(svc.ready().await.unwrap().call(req));
    let (first, reply) = handle.next_request().await.unwrap();
    let (hedge, _lost) = handle.next_request().await.unwrap();
    assert_eq!(
        (param::<AttemptNumber>(&first).0, param::<IsHedge>(&first).0),
        (2, false)
    );
    assert_eq!(
        (param::<AttemptNumber>(&hedge).0, param::<IsHedge>(&hedge).0),
        (3, true)
    );
    reply.send_response("from the first");
    let answer = try2.await.unwrap().unwrap();
    assert_eq!((answer.winner, answer.hedged), (2, true));
    assert_eq!(counters.hedges.load(Relaxed), 1);
    assert_eq!(
        counters.hedges_won.load(Relaxed),
        0,
        "the hedge (attempt 3) lost to attempt 2"
    );
}
