//! Hedged requests: a second attempt when the first is slow, the first answer wins and the other
//! is cancelled at its backend; none when the first answers in time; a budget when everything is
//! slow; never past the call's deadline.

use std::time::{Duration, Instant};

use aggregator::{HedgeAfter, HedgePolicy};
use fanout_proto::v1::{AggregateRequest, BackendResult};
use fanout_tests::*;

fn hedging(after: Duration, budget_ratio: f32) -> HedgePolicy {
    HedgePolicy {
        after: Some(HedgeAfter::Fixed(after)),
        max_hedges: 1,
        budget_ratio,
    }
}

async fn one(
    client: &mut fanout_proto::v1::aggregator_client::AggregatorClient<tonic::transport::Channel>,
    req: AggregateRequest,
) -> (BackendResult, Duration) {
    let started = Instant::now();
    let reply = client
        .aggregate(req)
        .await
        .expect("the call succeeds as a whole")
        .into_inner();
    (reply.results[0].clone(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hedge_wins_against_a_slow_replica_and_the_loser_is_cancelled() {
    // One backend, two replicas: one takes a second, the other 5 ms.
    let slow = start_backend(backend_config("b", "1s"), 2);
    let fast = start_backend(backend_config("b", "5ms"), 2);
    let agg = start_aggregator(
        AggregatorConfig {
            hedge: hedging(Duration::from_millis(30), 1.0),
            ..aggregator_config(vec![spec("b", &slow), spec("b", &fast)])
        },
        2,
    );
    let mut client = aggregator_client(&agg).await;
    let mut hedged = 0;
    for i in 0..20 {
        let (r, took) = one(&mut client, aggregate(&format!("q{i}"))).await;
        assert_eq!(outcome_code(&r), "OK", "{r:?}");
        // Never the slow replica's second: either the fast one first, or the hedge to it.
        assert!(
            took < Duration::from_millis(400),
            "call {i} took {took:?}: {r:?}"
        );
        if r.hedged {
            hedged += 1;
            assert_eq!((r.winner, r.attempts), (2, 2), "{r:?}");
        } else {
            assert_eq!(r.winner, 1, "{r:?}");
        }
    }
    println!("{hedged} of 20 calls hedged");
    assert!(
        hedged >= 2,
        "the slow replica was never tried first? {hedged} hedged"
    );
    let stats = aggregator_stats(&mut client).await;
    assert_eq!(
        (stats.hedges, stats.hedges_won),
        (hedged, hedged),
        "{stats:?}"
    );
    // Every losing attempt was cancelled at the slow replica.
    let mut slow_client = backend_client(&slow).await;
    assert!(
        eventually(Duration::from_secs(3), || {
            let mut c = slow_client.clone();
            async move { backend_stats(&mut c).await.cancelled == hedged }
        })
        .await,
        "{:?}",
        backend_stats(&mut slow_client).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_hedge_when_the_first_answer_comes_in_time() {
    let b = start_backend(backend_config("b", "5ms"), 2);
    let agg = start_aggregator(
        AggregatorConfig {
            hedge: hedging(Duration::from_millis(200), 1.0),
            ..aggregator_config(vec![spec("b", &b)])
        },
        2,
    );
    let mut client = aggregator_client(&agg).await;
    for i in 0..20 {
        let (r, _) = one(&mut client, aggregate(&format!("q{i}"))).await;
        assert!(!r.hedged && r.attempts == 1 && r.winner == 1, "{r:?}");
    }
    assert_eq!(aggregator_stats(&mut client).await.hedges, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_budget_caps_hedges_when_every_call_is_slow() {
    let b = start_backend(backend_config("b", "40ms"), 2);
    // 5% of calls, plus one a second over the budget's 10 s window.
    let agg = start_aggregator(
        AggregatorConfig {
            hedge: hedging(Duration::from_millis(2), 0.05),
            ..aggregator_config(vec![spec("b", &b)])
        },
        2,
    );
    let client = aggregator_client(&agg).await;
    let calls = 160;
    let tasks: Vec<_> = (0..8)
        .map(|caller| {
            let mut c = client.clone();
            tokio::spawn(async move {
                for i in 0..calls / 8 {
                    let (r, _) = one(&mut c, aggregate(&format!("c{caller}-{i}"))).await;
                    assert_eq!(outcome_code(&r), "OK", "{r:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let stats = aggregator_stats(&mut aggregator_client(&agg).await).await;
    println!(
        "{calls} calls: {} hedges, {} refused",
        stats.hedges, stats.hedges_refused
    );
    // Without a budget every call would be hedged.
    let bound = (0.05 * calls as f64) as u64 + 10 + 2;
    assert!(
        stats.hedges <= bound,
        "{} hedges for {calls} calls",
        stats.hedges
    );
    assert!(stats.hedges_refused >= calls as u64 - bound, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_never_outlives_the_deadline() {
    let b = start_backend(backend_config("b", "1s"), 2);
    let agg = start_aggregator(
        AggregatorConfig {
            hedge: hedging(Duration::from_millis(20), 1.0),
            ..aggregator_config(vec![spec("b", &b)])
        },
        2,
    );
    let mut client = aggregator_client(&agg).await;
    let (r, took) = one(
        &mut client,
        AggregateRequest {
            deadline_ms: Some(150),
            ..aggregate("late")
        },
    )
    .await;
    println!("{r:?} after {took:?}");
    assert_eq!(outcome_code(&r), "DEADLINE_EXCEEDED", "{r:?}");
    assert!(r.hedged && r.attempts == 2, "{r:?}");
    assert!(took < Duration::from_millis(400), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_may_ask_for_hedging_when_overrides_are_allowed() {
    let slow = start_backend(backend_config("b", "1s"), 2);
    let fast = start_backend(backend_config("b", "5ms"), 2);
    let specs = vec![spec("b", &slow), spec("b", &fast)];
    let strict = start_aggregator(aggregator_config(specs.clone()), 2);
    let err = aggregator_client(&strict)
        .await
        .aggregate(AggregateRequest {
            hedge_after_ms: Some(30),
            ..aggregate("q")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(err.message().contains("hedge_after_ms"), "{err:?}");

    let open = start_aggregator(
        AggregatorConfig {
            allow_overrides: true,
            ..aggregator_config(specs)
        },
        2,
    );
    let mut client = aggregator_client(&open).await;
    let err = client
        .aggregate(AggregateRequest {
            hedge_after_ms: Some(700_000),
            ..aggregate("q")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    // Not hedging by default, hedging when asked: the slow replica's second is cut short.
    for i in 0..10 {
        let (r, took) = one(
            &mut client,
            AggregateRequest {
                hedge_after_ms: Some(30),
                ..aggregate(&format!("q{i}"))
            },
        )
        .await;
        assert_eq!(outcome_code(&r), "OK", "{r:?}");
        assert!(took < Duration::from_millis(400), "{took:?}: {r:?}");
    }
}
