//! A silent backend: one that holds its connections open and never answers, either a process
//! stopped with SIGSTOP (the kernel still accepts its connections) or a listener that accepts
//! and never speaks. Calls still end by their deadline with that backend's
//! `DEADLINE_EXCEEDED`, and the other backends answer. HTTP/2 keepalive notices the dead
//! connection on its own: an attempt stuck on it fails with `UNAVAILABLE` after the keepalive
//! interval plus its timeout, before the call's deadline, and the channel reconnects.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_proto::v1::backend_result::Outcome;
use fanout_proto::v1::{AggregateReply, AggregateRequest, BackendResult};
use fanout_tests::load::{
    SilentListener, Stopped, aggregate_load, aggregator_process, backend_process, bounded, ms,
};
use fanout_tests::process::Process;
use fanout_tests::*;
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_millis(300);
/// How far past its deadline a call may end on a busy 2-core machine (debug builds; another
/// process can stall this one for a couple of hundred milliseconds). Still less than the 1 s
/// attempt timeout, so a deadline not enforced would show.
const MARGIN: Duration = Duration::from_millis(500);

fn result<'a>(reply: &'a AggregateReply, backend: &str) -> &'a BackendResult {
    reply
        .results
        .iter()
        .find(|r| r.backend == backend)
        .unwrap_or_else(|| panic!("no result for {backend}: {reply:?}"))
}

async fn silent_process() -> Process {
    tokio::task::spawn_blocking(|| backend_process("silent", "127.0.0.1:0", &["--latency", "10ms"]))
        .await
        .unwrap()
}

/// Six callers for 1.5 s against `fast` and `silent` (at `silent_url`): each call ends by its
/// 300 ms deadline, `fast` answering. `silent` costs the first calls their deadline
/// (DEADLINE_EXCEEDED); once four have run out of time without an answer it is known silent,
/// and its part of every later call fails at once (UNAVAILABLE, not sent), so those calls take
/// what `fast` takes.
async fn calls_end_by_their_deadline(silent_url: String) {
    let fast = start_backend(backend_config("fast", "10ms"), 1);
    let silent_spec = format!("silent={silent_url}").parse().unwrap();
    let agg = start_aggregator(aggregator_config(vec![spec("fast", &fast), silent_spec]), 2);
    let client = aggregator_client(&agg).await;
    let load = aggregate_load(6, Duration::from_secs(10), client, DEADLINE);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let samples = load.finish().await;
    let took: Vec<Duration> = samples.iter().map(|s| s.took).collect();
    println!(
        "{} calls; took min {:.1} ms, max {:.1} ms (deadline {} ms)",
        samples.len(),
        ms(*took.iter().min().unwrap()),
        ms(*took.iter().max().unwrap()),
        DEADLINE.as_millis()
    );
    let (mut waited, mut fast_failed) = (0, 0);
    for s in &samples {
        let reply = s.value.as_ref().expect("the call succeeds as a whole");
        assert!(
            s.took <= DEADLINE + MARGIN,
            "a call took {:.1} ms: {reply:?}",
            ms(s.took)
        );
        assert_eq!(outcome_code(result(reply, "fast")), "OK", "{reply:?}");
        let silent = result(reply, "silent");
        // The deadline, not a retry or a queue, ended it: one attempt.
        assert_eq!(silent.attempts, 1, "{reply:?}");
        match outcome_code(silent).as_str() {
            "DEADLINE_EXCEEDED" => {
                assert!(
                    silent.latency_ms >= ms(DEADLINE) - 10.0,
                    "the silent backend 'failed' before the deadline: {reply:?}"
                );
                waited += 1;
            }
            "UNAVAILABLE" => {
                let Some(Outcome::Failure(f)) = &silent.outcome else {
                    unreachable!()
                };
                assert!(f.message.contains("is silent"), "{f:?}");
                fast_failed += 1;
            }
            other => panic!("{other}: {reply:?}"),
        }
    }
    println!("{waited} calls waited for the silent backend, {fast_failed} failed its part at once");
    // The first wave (six callers) waits, and the calls its callers sent next before the fourth
    // of them ran out of time; no more.
    assert!((4..=18).contains(&waited), "{waited} waited");
    // Then calls take what the fast backend takes: many more of them in the time.
    assert!(
        fast_failed >= 30,
        "only {fast_failed} calls after the silence was known"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_backend_costs_each_call_its_deadline_and_no_more() {
    let silent = silent_process().await;
    let _stopped = Stopped::new(&silent);
    calls_end_by_their_deadline(silent.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_never_answers_costs_each_call_its_deadline_and_no_more() {
    let silent = SilentListener::start().await;
    calls_end_by_their_deadline(silent.url()).await;
    assert!(silent.accepted.load(Ordering::Relaxed) >= 1);
}

/// An aggregator process in front of `silent_url` alone, started with `--keepalive-interval`
/// and `--keepalive-timeout` both `keepalive`, and `--max-attempts` (1 shows the attempt's own
/// outcome to the caller). With `warm`, one call is made first, while the backend still
/// answers, so later calls are stuck on a connection that worked.
async fn aggregator_for(
    silent_url: &str,
    keepalive: &'static str,
    max_attempts: &'static str,
    warm: bool,
) -> (Process, AggregatorClient<Channel>) {
    let backends = [("silent", silent_url.to_owned())];
    let agg = tokio::task::spawn_blocking(move || {
        aggregator_process(
            &backends,
            &[
                "--keepalive-interval",
                keepalive,
                "--keepalive-timeout",
                keepalive,
                "--max-attempts",
                max_attempts,
                "--deadline",
                "10s",
                "--attempt-timeout",
                "10s",
            ],
        )
    })
    .await
    .unwrap();
    let mut client = AggregatorClient::connect(agg.url()).await.unwrap();
    if warm {
        let reply = client
            .aggregate(aggregate("warm"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(outcome_code(&reply.results[0]), "OK", "{reply:?}");
    }
    (agg, client)
}

/// One call with a deadline of `deadline_ms`: the silent backend's result, and how long the call
/// took.
async fn stuck_call(
    mut client: AggregatorClient<Channel>,
    deadline_ms: u32,
) -> (BackendResult, Duration) {
    let start = Instant::now();
    let call = client.aggregate(AggregateRequest {
        query: "stuck".into(),
        deadline_ms: Some(deadline_ms),
        ..Default::default()
    });
    let reply = bounded(Duration::from_secs(8), call)
        .await
        .expect("the call succeeds as a whole")
        .into_inner();
    (reply.results[0].clone(), start.elapsed())
}

/// What keepalive does here, measured: the aggregator pings each backend connection every
/// `--keepalive-interval` and closes it when a ping goes unanswered for `--keepalive-timeout`.
/// An attempt waiting on that connection then fails with UNAVAILABLE ("keep-alive timed out"),
/// about interval + timeout (2 s here) after the backend went silent, instead of at the call's
/// 4 s deadline; without keepalive the same attempt waits out the whole deadline. The channel
/// then opens a new connection, which the kernel accepts (a stopped process's listen backlog
/// still completes handshakes), so the next attempt is just as stuck: with the default three
/// attempts, a call with a 5 s deadline is retried on fresh connections (two attempts of about
/// 2 s each, then a third) and still ends at its deadline, as DEADLINE_EXCEEDED. (Not 4 s: two
/// 2 s attempts would race the deadline.) Keepalive bounds how long a dead
/// connection is trusted; the deadline still bounds the call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_notices_a_silent_connection_before_the_deadline() {
    let stopped_backend = silent_process().await;
    let listener = SilentListener::start().await;
    let stopped_url = stopped_backend.url();

    let (_a1, with) = aggregator_for(&stopped_url, "1s", "1", true).await;
    let (_a2, without) = aggregator_for(&stopped_url, "1h", "1", true).await;
    let (_a3, never_client) = aggregator_for(&listener.url(), "1s", "1", false).await;
    let (_a4, retrying) = aggregator_for(&stopped_url, "1s", "3", true).await;
    let stopped = Stopped::new(&stopped_backend);
    let ((with, with_took), (without, without_took), (never, never_took), (retried, retried_took)) = tokio::join!(
        stuck_call(with, 4000),
        stuck_call(without, 4000),
        stuck_call(never_client.clone(), 4000),
        stuck_call(retrying, 5000)
    );
    drop(stopped);
    // The channel connects again for the next call (connections are made on demand).
    let mut next = never_client;
    let reply = next
        .aggregate(AggregateRequest {
            query: "next".into(),
            deadline_ms: Some(200),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(outcome_code(&reply.results[0]), "DEADLINE_EXCEEDED");
    println!(
        "stopped backend, keepalive 1s/1s: {} after {:.0} ms ({:?}); without keepalive: {} \
         after {:.0} ms; listener that never answers, keepalive 1s/1s: {} after {:.0} ms, \
         {} connections accepted; stopped backend, keepalive 1s/1s and 3 attempts: {} after \
         {:.0} ms, {} attempts",
        outcome_code(&with),
        ms(with_took),
        with.outcome,
        outcome_code(&without),
        ms(without_took),
        outcome_code(&never),
        ms(never_took),
        listener.accepted.load(Ordering::Relaxed),
        outcome_code(&retried),
        ms(retried_took),
        retried.attempts,
    );

    for (what, r, took) in [
        ("stopped backend", &with, with_took),
        ("silent listener", &never, never_took),
    ] {
        assert_eq!(outcome_code(r), "UNAVAILABLE", "{what}: {r:?}");
        let fanout_proto::v1::backend_result::Outcome::Failure(f) = r.outcome.as_ref().unwrap()
        else {
            unreachable!()
        };
        assert!(f.message.contains("keep-alive"), "{what}: {r:?}");
        // About interval + timeout (2 s), well before the 4 s deadline.
        assert!(
            took >= Duration::from_millis(500) && took <= Duration::from_millis(3500),
            "{what}: keepalive took {:.0} ms to notice",
            ms(took)
        );
    }
    // The channel dropped the dead connection and opened a new one.
    assert!(
        listener.accepted.load(Ordering::Relaxed) >= 2,
        "the aggregator did not reconnect"
    );
    // Without keepalive, the attempt waits for the whole deadline.
    assert_eq!(outcome_code(&without), "DEADLINE_EXCEEDED", "{without:?}");
    assert!(
        without_took >= Duration::from_millis(3900),
        "{without_took:?}"
    );
    // With retries, keepalive's UNAVAILABLE is retried on a new connection, just as silent.
    // Two connections lost in a row make the endpoint known unreachable: the next attempt
    // fails at once (not sent) instead of waiting out the deadline; or the deadline comes
    // first.
    assert!(retried.attempts >= 2, "{retried:?}");
    let Some(Outcome::Failure(f)) = &retried.outcome else {
        panic!("{retried:?}")
    };
    match f.code_name.as_str() {
        "UNAVAILABLE" => assert!(f.message.contains("not sent"), "{retried:?}"),
        "DEADLINE_EXCEEDED" => assert!(
            retried_took >= Duration::from_millis(4900),
            "{retried_took:?}"
        ),
        other => panic!("{other}: {retried:?}"),
    }
    assert!(
        retried_took <= Duration::from_millis(5500),
        "{retried_took:?}"
    );
}
