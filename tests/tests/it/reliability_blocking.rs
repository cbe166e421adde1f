//! A backend in `blocking` mode (`std::thread::sleep` on its async worker) with one worker,
//! under load, starves its own health check: the check waits behind the blocked calls. An
//! aggregator in `concurrent` mode in front of it and of a fast async backend stays responsive:
//! calls to the fast backend keep their small latency while the blocked one is saturated.

use std::time::{Duration, Instant};

use fanout_proto::v1::AggregateRequest;
use fanout_tests::load::{Load, backend_process, ms, percentile};
use fanout_tests::*;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

/// `n` health checks one after another; their latencies.
async fn health_latencies(url: &str, n: usize) -> Vec<Duration> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    let mut took = Vec::new();
    for _ in 0..n {
        let start = Instant::now();
        health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .expect("health check");
        took.push(start.elapsed());
    }
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_backend_starves_its_health_check_but_not_the_aggregator() {
    let blocked = tokio::task::spawn_blocking(|| {
        backend_process(
            "blocked",
            "127.0.0.1:0",
            &["--mode", "blocking", "--workers", "1", "--latency", "100ms"],
        )
    })
    .await
    .unwrap();
    let fast = start_backend(backend_config("fast", "10ms"), 2);
    let blocked_spec = format!("blocked={}", blocked.url()).parse().unwrap();
    let agg = start_aggregator(
        aggregator_config(vec![blocked_spec, spec("fast", &fast)]),
        2,
    );
    let client = aggregator_client(&agg).await;

    let idle = health_latencies(&blocked.url(), 5).await;

    // Saturate the blocked backend: 8 callers, each call 100 ms of its only worker.
    let load = Load::start(8, Duration::from_secs(10), {
        let client = client.clone();
        move |caller, i| {
            let mut c = client.clone();
            async move {
                c.aggregate(AggregateRequest {
                    query: format!("c{caller}-{i}"),
                    backends: vec!["blocked".into()],
                    deadline_ms: Some(5000),
                    ..Default::default()
                })
                .await
                .map(|r| outcome_code(&r.into_inner().results[0]))
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Meanwhile: health checks of the blocked backend, and calls to the fast one alone.
    let fast_calls = async {
        let mut c = client.clone();
        let mut took = Vec::new();
        let until = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < until {
            let start = Instant::now();
            let reply = c
                .aggregate(AggregateRequest {
                    query: "fast".into(),
                    backends: vec!["fast".into()],
                    ..Default::default()
                })
                .await
                .expect("a call to the fast backend")
                .into_inner();
            took.push(start.elapsed());
            assert_eq!(outcome_code(&reply.results[0]), "OK", "{reply:?}");
        }
        took
    };
    let blocked_url = blocked.url();
    let (loaded, fast_took) = tokio::join!(health_latencies(&blocked_url, 5), fast_calls);
    let blocked_calls = load.finish().await;
    let stalls = backend_stats(
        &mut fanout_proto::v1::backend_client::BackendClient::connect(blocked.url())
            .await
            .unwrap(),
    )
    .await;

    let idle_p50 = percentile(&idle, 0.5);
    // The mean: one check may slip in between two blocked calls (a few are seen at about 100
    // ms), most wait behind several.
    let loaded_mean = loaded.iter().sum::<Duration>() / loaded.len() as u32;
    let blocked_took: Vec<Duration> = blocked_calls.iter().map(|s| s.took).collect();
    println!(
        "blocked backend health check: idle p50 {:.2} ms, under load {:?} ms (mean {:.0} ms, \
         {:.0}x); {} calls to it, p50 {:.0} ms; runtime stalls {} (longest {} ms). Calls to \
         the fast backend meanwhile: {}, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(idle_p50),
        loaded.iter().map(|d| ms(*d).round()).collect::<Vec<_>>(),
        ms(loaded_mean),
        loaded_mean.as_secs_f64() / idle_p50.as_secs_f64(),
        blocked_calls.len(),
        ms(percentile(&blocked_took, 0.5)),
        stalls.runtime_stalls,
        stalls.longest_stall_ms,
        fast_took.len(),
        ms(percentile(&fast_took, 0.5)),
        ms(percentile(&fast_took, 0.99)),
        ms(percentile(&fast_took, 1.0)),
    );

    // The aggregator stays responsive: the fast backend's calls take their 10 ms and a little.
    assert!(fast_took.len() >= 20, "only {} fast calls", fast_took.len());
    assert!(
        percentile(&fast_took, 0.5) < Duration::from_millis(50),
        "fast p50 {:.1} ms",
        ms(percentile(&fast_took, 0.5))
    );
    // (p90, not p99: another process on a shared machine can stall this one for a couple of
    // hundred milliseconds, and that is not what this checks.)
    assert!(
        percentile(&fast_took, 0.9) < Duration::from_millis(200),
        "fast p90 {:.1} ms",
        ms(percentile(&fast_took, 0.9))
    );
    // The health check queues behind the blocked calls: several 100 ms sleeps, against a
    // millisecond or so when idle.
    assert!(
        loaded_mean >= Duration::from_millis(200),
        "health under load: mean {:.1} ms",
        ms(loaded_mean)
    );
    assert!(
        loaded_mean >= 20 * idle_p50,
        "health idle p50 {:.2} ms, under load mean {:.1} ms",
        ms(idle_p50),
        ms(loaded_mean)
    );
    // The blocked backend was saturated the whole time: its calls queued.
    assert!(
        percentile(&blocked_took, 0.5) >= Duration::from_millis(300),
        "calls to the blocked backend p50 {:.0} ms",
        ms(percentile(&blocked_took, 0.5))
    );
    assert!(
        blocked_calls
            .iter()
            .all(|s| matches!(s.value.as_deref(), Ok("OK"))),
        "calls to the blocked backend failed"
    );
}
