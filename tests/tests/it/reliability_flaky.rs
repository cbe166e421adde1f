//! A flaky backend (half its calls fail with UNAVAILABLE): retries recover most calls. A backend
//! that always fails: the retry budget keeps the aggregator from multiplying its load (no retry
//! storm).

use std::time::{Duration, Instant};

use aggregator::RetryPolicy;
use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_proto::v1::{AggregateRequest, BackendResult};
use fanout_tests::load::Load;
use fanout_tests::*;
use tonic::transport::Channel;

/// The one backend's result of a distinct aggregate call (caller `caller`'s `i`-th), which
/// must succeed as a whole.
async fn one_result(
    c: &mut AggregatorClient<Channel>,
    caller: usize,
    i: impl std::fmt::Display,
) -> BackendResult {
    let reply = c
        .aggregate(AggregateRequest {
            query: format!("c{caller}-{i}"),
            ..Default::default()
        })
        .await
        .expect("the call succeeds as a whole")
        .into_inner();
    reply.results[0].clone()
}

/// `callers` tasks making `per_caller` calls each; returns how many calls had `backend` OK.
async fn ok_count(client: &AggregatorClient<Channel>, callers: usize, per_caller: usize) -> usize {
    let tasks: Vec<_> = (0..callers)
        .map(|caller| {
            let mut c = client.clone();
            tokio::spawn(async move {
                let mut ok = 0;
                for i in 0..per_caller {
                    let result = one_result(&mut c, caller, i).await;
                    let code = outcome_code(&result);
                    assert!(code == "OK" || code == "UNAVAILABLE", "{result:?}");
                    ok += usize::from(code == "OK");
                }
                ok
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        ok += t.await.unwrap();
    }
    ok
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_recover_most_calls_to_a_backend_failing_half_the_time() {
    let flaky = start_backend(
        BackendConfig {
            fail_rate: 0.5,
            ..backend_config("flaky", "10ms")
        },
        2,
    );
    // The default three attempts, with a budget that allows a retry per call: this test is
    // about what retrying recovers. (The default 20% budget is sized for outages, not for a
    // backend that fails half the time: it would stop retrying after 20% of calls plus its
    // reserve of 100 retries, which the next test checks.)
    let with_retries = start_aggregator(
        AggregatorConfig {
            retry: RetryPolicy {
                budget_ratio: 1.0,
                ..RetryPolicy::default()
            },
            ..aggregator_config(vec![spec("flaky", &flaky)])
        },
        2,
    );
    // The same without retries, for contrast: about half the calls fail.
    let without_retries = start_aggregator(
        AggregatorConfig {
            retry: RetryPolicy {
                max_attempts: 1,
                ..RetryPolicy::default()
            },
            ..aggregator_config(vec![spec("flaky", &flaky)])
        },
        2,
    );
    let (callers, per_caller) = (8, 50);
    let calls = callers * per_caller;
    let mut with = aggregator_client(&with_retries).await;
    let without = aggregator_client(&without_retries).await;
    let (ok_with, ok_without) = tokio::join!(
        ok_count(&with, callers, per_caller),
        ok_count(&without, callers, per_caller)
    );
    let stats = aggregator_stats(&mut with).await;
    let ratio = |ok: usize| ok as f64 / calls as f64;
    println!(
        "{calls} calls each: with retries {ok_with} OK ({:.1}%; theory 87.5%), {} retries; \
         without retries {ok_without} OK ({:.1}%; theory 50%)",
        100.0 * ratio(ok_with),
        stats.retries,
        100.0 * ratio(ok_without),
    );
    // 80% is more than 4 standard deviations below 87.5% for 400 calls.
    assert!(ratio(ok_with) >= 0.80, "only {ok_with} of {calls} OK");
    assert!(
        ratio(ok_without) <= 0.62,
        "without retries {ok_without} of {calls} OK: is the backend failing half its calls?"
    );
    assert!(
        stats.retries > 0 && stats.retries_throttled == 0,
        "{stats:?}"
    );
}

/// With the default policy (3 attempts, budget 20% of calls plus 10/s over a 10 s window), an
/// always-failing backend gets at most (1 + 0.2) × calls + 10/s × (elapsed + 10 s) attempts:
/// the first tries, plus the retries the budget allows. A client without a budget would make
/// `max_attempts` (3) × calls, tripling the load on a backend that is already failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_always_failing_backend_gets_no_retry_storm() {
    let down = start_backend(
        BackendConfig {
            fail_rate: 1.0,
            ..backend_config("down", "5ms")
        },
        2,
    );
    let policy = RetryPolicy::default();
    let agg = start_aggregator(
        AggregatorConfig {
            retry: policy,
            ..aggregator_config(vec![spec("down", &down)])
        },
        2,
    );
    let client = aggregator_client(&agg).await;
    let started = Instant::now();
    let load = Load::start(8, Duration::from_secs(10), move |caller, i| {
        let mut c = client.clone();
        async move {
            let result = one_result(&mut c, caller, i).await;
            assert_eq!(outcome_code(&result), "UNAVAILABLE", "{result:?}");
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let calls = load.finish().await.len() as f64;
    let elapsed = started.elapsed().as_secs_f64();

    let backend = backend_stats(&mut backend_client(&down).await).await;
    let agg_stats = aggregator_stats(&mut aggregator_client(&agg).await).await;
    let attempts = (backend.served + backend.cancelled) as f64;
    let bound = (1.0 + f64::from(policy.budget_ratio)) * calls
        + f64::from(policy.budget_min_per_sec) * (elapsed + 10.0)
        + 10.0;
    let without_budget = f64::from(policy.max_attempts) * calls;
    println!(
        "{calls} calls in {elapsed:.2} s: {attempts} backend attempts ({} retries, {} refused \
         by the budget); bound {bound:.0}; without a budget: {without_budget:.0}",
        agg_stats.retries, agg_stats.retries_throttled
    );
    assert!(calls >= 200.0, "too few calls to tell: {calls}");
    assert!(
        attempts <= bound,
        "retry storm: {attempts} attempts for {calls} calls (bound {bound:.0})"
    );
    assert_eq!(agg_stats.backend_attempts as f64, attempts, "{agg_stats:?}");
    assert!(agg_stats.retries_throttled > 0, "{agg_stats:?}");
}
