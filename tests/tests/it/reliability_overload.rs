//! Ten times the capacity, offered open-loop: the excess is shed at once with
//! RESOURCE_EXHAUSTED, the admitted calls keep their latency, goodput stays near capacity, and
//! the aggregator's memory stays bounded (no queue grows).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout_proto::v1::AggregateRequest;
use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_proto::v1::backend_client::BackendClient;
use fanout_tests::load::{
    aggregator_clients, aggregator_process, backend_process, ms, open_loop, percentile, vm_rss_kib,
};
use fanout_tests::*;
use tonic::Code;
use tonic::transport::Channel;

const MAX_IN_FLIGHT: usize = 10;
const LATENCY: Duration = Duration::from_millis(100);
const OVERLOAD: f64 = 10.0;
const OFFERED_FOR: Duration = Duration::from_secs(2);

/// The server's `x-process-time` on an error.
fn process_time(status: &tonic::Status) -> Duration {
    let value = status
        .metadata()
        .get("x-process-time")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_suffix("ms"))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no x-process-time: {status:?}"));
    Duration::from_secs_f64(value / 1e3)
}

/// What one round of overload showed.
struct Round {
    report: String,
    /// Everything that depends on timing held (shedding fast, admitted latency, goodput).
    timely: Vec<String>,
}

/// One round: `OVERLOAD` × capacity offered open-loop for `OFFERED_FOR`. Checks what must hold
/// however busy the machine is (every call either admitted and served OK or shed with
/// RESOURCE_EXHAUSTED, and counted; the backend never above the cap) and returns the timing
/// checks that failed, if any.
async fn round(clients: &Arc<Vec<AggregatorClient<Channel>>>, backend_url: &str) -> Round {
    let capacity = MAX_IN_FLIGHT as f64 / LATENCY.as_secs_f64();
    let rate = OVERLOAD * capacity;
    let mut stats_client = clients[0].clone();
    let shed_before = aggregator_stats(&mut stats_client).await.shed;
    let started = Instant::now();
    let samples = open_loop(rate, OFFERED_FOR, 16, {
        let clients = clients.clone();
        move |n| {
            let mut c = clients[n as usize % clients.len()].clone();
            async move {
                c.aggregate(AggregateRequest {
                    query: format!("q{n}"),
                    deadline_ms: Some(2000),
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
            }
        }
    })
    .await;
    let offered_for = samples.last().unwrap().start - samples[0].start;
    let ended = started.elapsed();

    let shed: Vec<Duration> = samples
        .iter()
        .filter(|s| matches!(&s.value, Err(e) if e.code() == Code::ResourceExhausted))
        .map(|s| s.took)
        .collect();
    // The aggregator's own time on each shed call, from its `x-process-time` header.
    let shed_server: Vec<Duration> = samples
        .iter()
        .filter_map(|s| match &s.value {
            Err(e) if e.code() == Code::ResourceExhausted => Some(process_time(e)),
            _ => None,
        })
        .collect();
    let admitted: Vec<_> = samples.iter().filter(|s| s.value.is_ok()).collect();
    let admitted_took: Vec<Duration> = admitted.iter().map(|s| s.took).collect();
    let others: Vec<_> = samples
        .iter()
        .filter_map(|s| match &s.value {
            Err(e) if e.code() != Code::ResourceExhausted => Some(e),
            _ => None,
        })
        .collect();
    // Calls admitted while the load was offered, per second of it.
    let goodput = admitted.len() as f64 / offered_for.as_secs_f64();
    let shed_counted = aggregator_stats(&mut stats_client).await.shed - shed_before;
    let backend = backend_stats(
        &mut BackendClient::connect(backend_url.to_owned())
            .await
            .unwrap(),
    )
    .await;
    let report = format!(
        "offered {} calls at {rate:.0}/s over {:.2} s (capacity {capacity:.0}/s; all answered \
         after {:.2} s): {} admitted, goodput {goodput:.0}/s ({:.0}% of capacity), admitted \
         latency p50 {:.1} ms p99 {:.1} ms; {} shed, shed latency p50 {:.2} ms p99 {:.2} ms \
         max {:.2} ms (in the aggregator: p50 {:.3} ms p99 {:.3} ms max {:.3} ms); {} other \
         errors; backend max_in_flight {}",
        samples.len(),
        offered_for.as_secs_f64(),
        ended.as_secs_f64(),
        admitted.len(),
        100.0 * goodput / capacity,
        ms(percentile(&admitted_took, 0.5)),
        ms(percentile(&admitted_took, 0.99)),
        shed.len(),
        ms(percentile(&shed, 0.5)),
        ms(percentile(&shed, 0.99)),
        ms(percentile(&shed, 1.0)),
        ms(percentile(&shed_server, 0.5)),
        ms(percentile(&shed_server, 0.99)),
        ms(percentile(&shed_server, 1.0)),
        others.len(),
        backend.max_in_flight,
    );
    println!("{report}");

    assert!(
        others.is_empty(),
        "calls failed otherwise: {:?}",
        &others[..others.len().min(5)]
    );
    for s in &admitted {
        let reply = s.value.as_ref().unwrap();
        assert_eq!(outcome_code(&reply.results[0]), "OK", "{reply:?}");
    }
    // Everything past the cap was shed, and counted.
    assert!(
        shed.len() as f64 >= 0.8 * samples.len() as f64,
        "only {} of {} shed",
        shed.len(),
        samples.len()
    );
    assert_eq!(shed_counted as usize, shed.len());
    // The backend never saw more than the cap: shed calls never reach it.
    assert!(backend.max_in_flight <= MAX_IN_FLIGHT as u64, "{backend:?}");

    let mut timely = Vec::new();
    let mut check = |ok: bool, what: String| {
        if !ok {
            timely.push(what);
        }
    };
    // Shed at once: no queue, no waiting for a slot. In the aggregator a refusal takes tens of
    // microseconds (p50 0.06 ms, p99 0.5 ms in debug builds; p99 up to 3 ms with the CPUs
    // oversubscribed three times); the caller sees 1 to 2 ms at p99 (up to 32 ms on an
    // oversubscribed machine). Generous bounds, for debug builds on a busy machine.
    let p = |v: &[Duration], q| percentile(v, q);
    check(
        p(&shed_server, 0.5) < Duration::from_millis(1),
        format!(
            "shedding took the aggregator {:.2} ms at p50",
            ms(p(&shed_server, 0.5))
        ),
    );
    check(
        p(&shed_server, 0.99) < Duration::from_millis(20),
        format!(
            "shedding took the aggregator {:.2} ms at p99",
            ms(p(&shed_server, 0.99))
        ),
    );
    check(
        p(&shed, 0.99) < Duration::from_millis(50),
        format!("shedding p99 {:.1} ms", ms(p(&shed, 0.99))),
    );
    // Admitted calls keep their latency: the backend's 100 ms, plus a little.
    check(
        p(&admitted_took, 0.5) < LATENCY + Duration::from_millis(30),
        format!("admitted p50 {:.1} ms", ms(p(&admitted_took, 0.5))),
    );
    check(
        goodput >= 0.9 * capacity,
        format!("goodput {goodput:.0}/s is under 90% of the capacity {capacity:.0}/s"),
    );
    Round { report, timely }
}

/// The timing checks get up to three rounds: on a shared 2-core machine another process can
/// stall this one for a couple of hundred milliseconds (seen once: 180 ms in the aggregator
/// while a compiler ran), which no bound on a 2 s round survives. A regression fails every
/// round: queueing instead of shedding makes every refusal wait (p99 112 ms), and no cap sheds
/// nothing. Correctness and memory are checked on every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_times_the_capacity_is_shed_fast_and_the_rest_served_well() {
    let backend = tokio::task::spawn_blocking(|| {
        backend_process("b", "127.0.0.1:0", &["--latency", "100ms"])
    })
    .await
    .unwrap();
    let backends = [("b", backend.url())];
    let max_in_flight = MAX_IN_FLIGHT.to_string();
    let agg = tokio::task::spawn_blocking(move || {
        aggregator_process(&backends, &["--max-in-flight", &max_in_flight])
    })
    .await
    .unwrap();
    let pid = agg.pid();
    let clients = Arc::new(aggregator_clients(&agg.url(), 4).await);

    // Warm up (connections, allocator arenas, the backend channel), then measure memory.
    let mut warm = clients[0].clone();
    for _ in 0..5 {
        warm.aggregate(aggregate("warm")).await.unwrap();
    }
    let rss_before = vm_rss_kib(pid);

    // Sample RSS while the load runs, from a thread of its own.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        std::thread::spawn(move || {
            let mut peak = 0;
            while sampling.load(Ordering::Relaxed) {
                peak = peak.max(vm_rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        })
    };

    let mut rounds = Vec::new();
    for _ in 0..3 {
        let r = round(&clients, &backend.url()).await;
        let timely = r.timely.is_empty();
        rounds.push(r);
        if timely {
            break;
        }
    }
    sampling.store(false, Ordering::Relaxed);
    let rss_peak = sampler.join().unwrap();
    let rss_after = vm_rss_kib(pid);
    println!(
        "aggregator RSS {rss_before} KiB before, {rss_peak} KiB peak, {rss_after} KiB after \
         (+{} KiB) over {} round(s)",
        rss_peak.saturating_sub(rss_before),
        rounds.len()
    );
    let last = rounds.last().unwrap();
    assert!(
        last.timely.is_empty(),
        "timing off in all {} rounds: {:?}",
        rounds.len(),
        rounds
            .iter()
            .map(|r| (&r.timely, &r.report))
            .collect::<Vec<_>>()
    );
    // Memory stays bounded: nothing queues. (Growth seen here: under 2 MiB.)
    assert!(
        rss_peak.saturating_sub(rss_before) < 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_peak} KiB"
    );
}
