//! A backend process killed with SIGKILL under load: every aggregate call still succeeds, with
//! the dead backend's failure in its place (`UNAVAILABLE`, also for the calls that were on its
//! connection as it died) and the other backends' results beside it; no call waits past its
//! deadline.
//! Restarted on the same address, the backend is used again within 2 s: the aggregator's
//! channel reconnects by itself.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fanout_proto::v1::AggregateReply;
use fanout_tests::load::{Sample, aggregate_load, backend_process, free_addr, ms};
use fanout_tests::*;

/// The deadline every call asks for, and how far past it a call may end (scheduling on a busy
/// 2-core machine, debug builds).
const DEADLINE: Duration = Duration::from_millis(500);
const MARGIN: Duration = Duration::from_millis(500);

/// How long after the killed process is seen gone its connection may still be in use (the
/// aggregator notices the closed connection asynchronously).
const SETTLE: Duration = Duration::from_millis(300);

type Reply = Result<AggregateReply, tonic::Status>;

/// The outcome code of `backend` in a reply, "OK" or its failure's code name.
fn code_of(reply: &AggregateReply, backend: &str) -> String {
    reply
        .results
        .iter()
        .find(|r| r.backend == backend)
        .map_or("MISSING".into(), outcome_code)
}

/// Counts of `victim` outcomes among `samples`, for messages.
fn tally<'a>(samples: impl Iterator<Item = &'a Sample<Reply>>) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for s in samples {
        let code = match &s.value {
            Ok(reply) => code_of(reply, "victim"),
            Err(status) => format!("call failed: {:?}", status.code()),
        };
        *counts.entry(code).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_reported_and_used_again_once_restarted() {
    let victim_addr = free_addr();
    let victim_args = ["--latency", "20ms", "--grace-period", "1s"];
    let victim = {
        let addr = victim_addr.clone();
        tokio::task::spawn_blocking(move || backend_process("victim", &addr, &victim_args))
            .await
            .unwrap()
    };
    let a = start_backend(backend_config("a", "20ms"), 1);
    let b = start_backend(backend_config("b", "20ms"), 1);
    let victim_spec = format!("victim=http://{victim_addr}").parse().unwrap();
    let agg = start_aggregator(
        aggregator_config(vec![spec("a", &a), spec("b", &b), victim_spec]),
        2,
    );
    let client = aggregator_client(&agg).await;

    let load = aggregate_load(8, Duration::from_secs(20), client, DEADLINE);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let killed_at = Instant::now();
    victim.signal("KILL");
    let exited = tokio::task::spawn_blocking(move || {
        let mut victim = victim;
        victim.wait_exit(Duration::from_secs(5))
    })
    .await
    .unwrap();
    assert!(exited.is_some(), "the killed backend did not exit");
    let exited_at = Instant::now();

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let restarting_at = Instant::now();
    let restarted = {
        let addr = victim_addr.clone();
        tokio::task::spawn_blocking(move || backend_process("victim", &addr, &victim_args))
            .await
            .unwrap()
    };
    let serving_at = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let samples = load.finish().await;
    drop(restarted);

    let before = || samples.iter().filter(|s| s.end() < killed_at);
    let dead = || {
        samples
            .iter()
            .filter(|s| s.start > exited_at + SETTLE && s.end() < restarting_at)
    };
    let back = || {
        samples
            .iter()
            .filter(|s| s.start > serving_at + Duration::from_secs(2))
    };
    let first_ok_after_restart = samples
        .iter()
        .filter(|s| s.start > restarting_at)
        .find(|s| matches!(&s.value, Ok(r) if code_of(r, "victim") == "OK"))
        .map(|s| s.end().saturating_duration_since(serving_at));
    let slowest = samples.iter().map(|s| s.took).max().unwrap();
    println!(
        "{} calls; victim before the kill {:?}; while dead {:?}; 2 s after the restart {:?}; \
         first OK {:?} after the restarted backend served; slowest call {:.1} ms",
        samples.len(),
        tally(before()),
        tally(dead()),
        tally(back()),
        first_ok_after_restart,
        ms(slowest),
    );

    for s in &samples {
        // Every call succeeds as a whole, by its deadline, with the healthy backends' results.
        let reply = s.value.as_ref().unwrap_or_else(|e| {
            panic!("an aggregate call failed as a whole: {e:?}");
        });
        assert!(
            s.took <= DEADLINE + MARGIN,
            "a call took {:.1} ms with a {} ms deadline: {reply:?}",
            ms(s.took),
            DEADLINE.as_millis()
        );
        for healthy in ["a", "b"] {
            assert_eq!(code_of(reply, healthy), "OK", "{reply:?}");
        }
        // Whenever the victim failed, it failed fast (the bound above) and as UNAVAILABLE:
        // connection refused once it is dead, and for a call waiting on it as it died the
        // broken connection (which the aggregator's client reports as UNAVAILABLE, retryable).
        let victim = code_of(reply, "victim");
        assert!(
            victim == "OK" || victim == "UNAVAILABLE",
            "victim: {victim}: {reply:?}"
        );
    }
    assert!(
        before().count() >= 20,
        "too few calls before the kill: {}",
        before().count()
    );
    assert!(
        before().all(|s| code_of(s.value.as_ref().unwrap(), "victim") == "OK"),
        "before the kill: {:?}",
        tally(before())
    );
    assert!(
        dead().count() >= 20,
        "too few calls while dead: {}",
        dead().count()
    );
    assert!(
        dead().all(|s| code_of(s.value.as_ref().unwrap(), "victim") == "UNAVAILABLE"),
        "while dead: {:?}",
        tally(dead())
    );
    assert!(
        back().count() >= 20,
        "too few calls after the restart: {}",
        back().count()
    );
    assert!(
        back().all(|s| code_of(s.value.as_ref().unwrap(), "victim") == "OK"),
        "2 s after the restart, the backend is still not used: {:?}",
        tally(back())
    );
}

/// A call waiting on a backend when the backend dies should see `UNAVAILABLE` (the gRPC spec's
/// code for a connection that breaks mid-call, and the one the aggregator retries), like the
/// calls made after it died.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_waiting_on_a_backend_that_dies_see_unavailable() {
    let victim = tokio::task::spawn_blocking(|| {
        backend_process("victim", "127.0.0.1:0", &["--latency", "5s"])
    })
    .await
    .unwrap();
    let a = start_backend(backend_config("a", "10ms"), 1);
    let victim_spec = format!("victim={}", victim.url()).parse().unwrap();
    let agg = start_aggregator(
        AggregatorConfig {
            deadline: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(10),
            ..aggregator_config(vec![spec("a", &a), victim_spec])
        },
        2,
    );
    let client = aggregator_client(&agg).await;
    let calls: Vec<_> = (0..4)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { c.aggregate(aggregate(&format!("q{i}"))).await })
        })
        .collect();
    let waiting = eventually(Duration::from_secs(5), || {
        let mut c = client.clone();
        async move { aggregator_stats(&mut c).await.in_flight == 4 }
    })
    .await;
    assert!(waiting, "the calls never got in flight");
    tokio::time::sleep(Duration::from_millis(200)).await;
    victim.signal("KILL");
    for call in calls {
        let reply = call.await.unwrap().expect("the call succeeds").into_inner();
        let failure = reply
            .results
            .iter()
            .find(|r| r.backend == "victim")
            .expect("victim's result");
        assert_eq!(outcome_code(failure), "UNAVAILABLE", "{reply:?}");
    }
}
