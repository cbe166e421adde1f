//! One aggregate call through real backend processes makes one trace: the aggregator's server
//! span, a span per backend call, a span per attempt, and each backend's server span as the
//! child of the attempt that called it, failures marked as errors. Received by a real OTLP
//! receiver over gRPC.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use fanout_proto::v1::AggregateRequest;
use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_tests::otlp::{ReceivedSpan, Receiver};
use fanout_tests::process::Process;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_aggregate_call_is_one_trace_across_processes() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let (receiver, spans) = Receiver::new(|_| {});
    tokio::spawn(receiver.serve(listener, std::future::pending()));

    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str())];
    let listen = ["--listen", "127.0.0.1:0"];
    let ok1 = Process::start(
        "backend",
        &[&listen[..], &["--name", "ok1", "--latency", "10ms"]].concat(),
        &env,
    );
    let ok2 = Process::start(
        "backend",
        &[&listen[..], &["--name", "ok2", "--latency", "30ms"]].concat(),
        &env,
    );
    let bad = Process::start(
        "backend",
        &[
            &listen[..],
            &["--name", "bad", "--latency", "1ms", "--fail-rate", "1"],
        ]
        .concat(),
        &env,
    );
    let backends = [("ok1", &ok1), ("ok2", &ok2), ("bad", &bad)]
        .map(|(n, p)| format!("--backend={n}={}", p.url()));
    let mut args: Vec<&str> = listen.to_vec();
    args.extend(backends.iter().map(String::as_str));
    args.extend(["--max-attempts", "2", "--backoff-base", "1ms"]);
    let agg = Process::start("aggregator", &args, &env);

    let mut client = AggregatorClient::connect(agg.url()).await.unwrap();
    let reply = client
        .aggregate(AggregateRequest {
            query: "traced".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reply.summary.unwrap().ok, 2);

    // Spans leave in batches (every second): wait for all of them.
    let start = Instant::now();
    let expected = 1 + 3 + 4 + 4 + 4; // server, backends, attempts, backend servers, waits
    let got: Vec<ReceivedSpan> = loop {
        let now = spans.lock().unwrap().clone();
        if now.len() >= expected || start.elapsed() > Duration::from_secs(15) {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let dump = || {
        got.iter()
            .map(|s| {
                format!(
                    "{} {} {} <- {}",
                    s.service, s.name, s.span_id, s.parent_span_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };

    let root = got
        .iter()
        .find(|s| s.name == "fanout.v1.Aggregator/Aggregate")
        .unwrap_or_else(|| panic!("no aggregator server span:\n{}", dump()));
    assert_eq!(root.service, "aggregator");
    assert!(
        root.parent_span_id.is_empty(),
        "the call had no caller trace"
    );
    assert!(
        got.iter().all(|s| s.trace_id == root.trace_id),
        "more than one trace:\n{}",
        dump()
    );

    let by_id: HashMap<&str, &ReceivedSpan> = got.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let parent = |s: &ReceivedSpan| by_id.get(s.parent_span_id.as_str()).copied();
    for name in ["ok1", "ok2", "bad"] {
        let backend = got
            .iter()
            .find(|s| s.name == format!("backend {name}"))
            .unwrap_or_else(|| panic!("no span for backend {name}:\n{}", dump()));
        assert_eq!(backend.parent_span_id, root.span_id, "backend {name}");
        let attempts: Vec<&ReceivedSpan> = got
            .iter()
            .filter(|s| s.name.starts_with("attempt ") && s.parent_span_id == backend.span_id)
            .collect();
        let want_attempts = if name == "bad" { 2 } else { 1 };
        assert_eq!(
            attempts.len(),
            want_attempts,
            "attempts of {name}:\n{}",
            dump()
        );
        assert_eq!(backend.error, name == "bad", "backend {name} error status");
        for attempt in attempts {
            assert_eq!(attempt.error, name == "bad", "{attempt:?}");
            // The backend process's own server span hangs under this attempt.
            let served: Vec<&ReceivedSpan> = got
                .iter()
                .filter(|s| s.parent_span_id == attempt.span_id)
                .collect();
            assert_eq!(
                served.len(),
                1,
                "server spans under {attempt:?}:\n{}",
                dump()
            );
            let server = served[0];
            assert_eq!(server.service, format!("backend-{name}"));
            assert_eq!(server.name, "fanout.v1.Backend/Fetch");
            assert_eq!(server.error, name == "bad", "{server:?}");
            assert_eq!(
                parent(server).map(|p| p.span_id.as_str()),
                Some(attempt.span_id.as_str())
            );
            assert!(
                got.iter()
                    .any(|s| s.name.starts_with("wait ") && s.parent_span_id == server.span_id),
                "no wait span under {server:?}"
            );
        }
    }
    drop((ok1, ok2, bad, agg));
}

/// Median wall time of `n` sequential Fetch calls to `url`.
async fn median_fetch(url: String, n: usize) -> Duration {
    let mut client = fanout_proto::v1::backend_client::BackendClient::connect(url)
        .await
        .unwrap();
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        client
            .fetch(fanout_tests::fetch("q"))
            .await
            .expect("served despite the collector");
        times.push(start.elapsed());
    }
    times.sort();
    times[n / 2]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_collector_never_slows_serving() {
    // A "collector" that accepts connections and never answers: every export hangs until its
    // timeout. Serving must not notice.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let listen = ["--listen", "127.0.0.1:0", "--latency", "5ms"];
    let traced = Process::start(
        "backend",
        &listen,
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", silent_url.as_str())],
    );
    let plain = Process::start("backend", &listen, &[]);

    let (with, without) = (
        median_fetch(traced.url(), 200).await,
        median_fetch(plain.url(), 200).await,
    );
    eprintln!("median fetch: {with:?} exporting to a silent collector, {without:?} without export");
    assert!(
        with.as_secs_f64() < without.as_secs_f64() * 1.5 + 0.002,
        "a silent collector slowed serving: {with:?} against {without:?}"
    );

    // Nor hold up shutdown: the final flush gives up after a few seconds.
    let mut traced = traced;
    let stopping = Instant::now();
    traced.signal("TERM");
    let status = traced
        .wait_exit(Duration::from_secs(10))
        .expect("exits despite the collector");
    assert!(status.success(), "{status:?}");
    eprintln!(
        "shutdown with a silent collector took {:?}",
        stopping.elapsed()
    );
    assert!(
        stopping.elapsed() < Duration::from_secs(8),
        "{:?}",
        stopping.elapsed()
    );
    drop(silent);
}
