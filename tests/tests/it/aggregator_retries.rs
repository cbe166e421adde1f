//! Retries recover flaky backends; the retry budget keeps an outage from becoming a storm.

use std::time::Duration;

use aggregator::RetryPolicy;
use fanout_tests::*;

fn quick_retries(max_attempts: u32, budget_ratio: f32, budget_min_per_sec: u32) -> RetryPolicy {
    RetryPolicy {
        max_attempts,
        backoff_base: Duration::from_millis(1),
        backoff_cap: Duration::from_millis(2),
        budget_ratio,
        budget_min_per_sec,
    }
}

#[tokio::test]
async fn retries_succeed_on_a_later_attempt() {
    // Seeded: the same calls fail on every run.
    let flaky = start_backend(
        BackendConfig {
            fail_rate: 0.5,
            seed: Some(11),
            ..backend_config("flaky", "1ms")
        },
        2,
    );
    let config = AggregatorConfig {
        retry: quick_retries(4, 0.5, 10),
        ..aggregator_config(vec![spec("flaky", &flaky)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let (mut ok, mut retried_ok) = (0, 0);
    for i in 0..40 {
        let reply = client
            .aggregate(aggregate(&format!("q{i}")))
            .await
            .unwrap()
            .into_inner();
        let r = &reply.results[0];
        if outcome_code(r) == "OK" {
            ok += 1;
            retried_ok += usize::from(r.attempts > 1);
        } else {
            assert_eq!(r.attempts, 4, "{r:?}");
        }
    }
    // Half the attempts fail; four attempts make a call fail 1 time in 16.
    assert!(ok >= 33, "{ok} of 40 calls succeeded");
    assert!(
        retried_ok >= 8,
        "only {retried_ok} calls succeeded on a retry"
    );
    let stats = aggregator_stats(&mut client).await;
    assert!(stats.retries >= retried_ok as u64, "{stats:?}");
}

#[tokio::test]
async fn the_budget_caps_retries_when_a_backend_always_fails() {
    let down = start_backend(
        BackendConfig {
            fail_rate: 1.0,
            ..backend_config("down", "0ms")
        },
        2,
    );
    // 10% of calls, no per-second minimum, up to 5 attempts each.
    let config = AggregatorConfig {
        retry: quick_retries(5, 0.1, 0),
        ..aggregator_config(vec![spec("down", &down)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let calls = 200;
    for i in 0..calls {
        let reply = client
            .aggregate(aggregate(&format!("q{i}")))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outcome_code(&reply.results[0]), "UNAVAILABLE");
    }
    let mut backend = backend_client(&down).await;
    let seen = backend_stats(&mut backend).await.served;
    let stats = aggregator_stats(&mut client).await;
    eprintln!("{calls} calls -> {seen} backend calls; {stats:?}");
    // Without a budget: 5 x 200 = 1000. With it: at most 200 + 10%, plus rounding.
    assert!(
        seen <= (calls as f64 * 1.1) as u64 + 2,
        "{seen} backend calls for {calls}"
    );
    assert!(seen > calls, "no retries at all: {seen}");
    assert!(stats.retries_throttled > 0, "{stats:?}");
    assert_eq!(stats.backend_attempts, seen);
}

/// Each backend has its own retry budget: in the same calls, a backend that always fails spends
/// its own tokens, and a flaky one keeps the retries it needs. With one budget for the whole
/// aggregator, the dead backend's retries would drain it and the flaky one's would be refused.
#[tokio::test]
async fn each_backend_spends_its_own_retry_budget() {
    let down = start_backend(
        BackendConfig {
            fail_rate: 1.0,
            ..backend_config("down", "0ms")
        },
        2,
    );
    let flaky = start_backend(
        BackendConfig {
            fail_rate: 0.5,
            seed: Some(3),
            ..backend_config("flaky", "0ms")
        },
        2,
    );
    // A retry per call (ratio 1) plus a reserve of 10: the dead backend wants two per call, the
    // flaky one three in four on average.
    let config = AggregatorConfig {
        retry: quick_retries(3, 1.0, 1),
        ..aggregator_config(vec![spec("down", &down), spec("flaky", &flaky)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let (mut down_refused, mut flaky_refused, mut flaky_retries) = (0, 0, 0);
    for i in 0..100 {
        let reply = client
            .aggregate(aggregate(&format!("q{i}")))
            .await
            .unwrap()
            .into_inner();
        for r in &reply.results {
            let refused = matches!(
                &r.outcome,
                Some(fanout_proto::v1::backend_result::Outcome::Failure(f))
                    if f.message.contains("retry budget is spent")
            );
            match r.backend.as_str() {
                "down" => down_refused += usize::from(refused),
                _ => {
                    flaky_refused += usize::from(refused);
                    flaky_retries += r.attempts.saturating_sub(1);
                }
            }
        }
    }
    println!(
        "down refused a retry in {down_refused} calls; flaky retried {flaky_retries} times, \
         refused in {flaky_refused} calls"
    );
    assert!(
        down_refused >= 50,
        "the dead backend was refused only {down_refused} times"
    );
    assert!(
        flaky_retries >= 30,
        "the flaky backend retried only {flaky_retries} times"
    );
    assert_eq!(flaky_refused, 0, "the flaky backend's retries were refused");
}
