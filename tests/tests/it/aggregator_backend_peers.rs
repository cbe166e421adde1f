//! Backends that are not our own well-behaved servers: one that floods PINGs and never reads,
//! one whose answer is an endless chain of CONTINUATION frames, one that is not HTTP/2 at all,
//! one that takes only two streams at a time, one that compresses its replies. Each call still
//! ends by its deadline with that backend's own result, the other backends answer, and the
//! aggregator's memory stays bounded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use fanout_proto::v1::AggregateReply;
use fanout_proto::v1::backend_server::BackendServer;
use fanout_server::Counters;
use fanout_tests::hostile::{HostileBackend, Misbehaviour};
use fanout_tests::load::{aggregator_process, backend_process, vm_rss_kib};
use fanout_tests::*;
use tonic::codec::CompressionEncoding;
use tonic::transport::server::TcpIncoming;

/// Aggregate calls at `url` for `for_how_long`, one after another; each must succeed as a whole.
async fn calls_for(url: &str, for_how_long: Duration) -> Vec<(Duration, AggregateReply)> {
    let mut client = fanout_proto::v1::aggregator_client::AggregatorClient::connect(url.to_owned())
        .await
        .expect("connect to the aggregator");
    let start = Instant::now();
    let mut replies = Vec::new();
    let mut i = 0;
    while start.elapsed() < for_how_long {
        i += 1;
        let began = Instant::now();
        let reply = client
            .aggregate(aggregate(&format!("q{i}")))
            .await
            .expect("the call succeeds as a whole")
            .into_inner();
        replies.push((began.elapsed(), reply));
    }
    replies
}

/// Runs an aggregator process over `hostile` and a good backend for a few seconds of calls
/// (deadline 300 ms); checks every call ended by its deadline with `good` OK and the hostile
/// backend failed, and returns the aggregator's RSS growth in MiB.
async fn against(hostile: &HostileBackend) -> f64 {
    let good = backend_process("good", "127.0.0.1:0", &["--latency", "5ms"]);
    let agg = aggregator_process(
        &[("hostile", hostile.url()), ("good", good.url())],
        &["--deadline", "300ms", "--attempt-timeout", "100ms"],
    );
    let before = vm_rss_kib(agg.pid());
    let replies = calls_for(&agg.url(), Duration::from_secs(3)).await;
    let after = vm_rss_kib(agg.pid());
    assert!(replies.len() >= 5, "only {} calls in 3 s", replies.len());
    for (took, reply) in &replies {
        assert!(
            *took < Duration::from_millis(600),
            "a call took {took:?}: {reply:?}"
        );
        let code =
            |name: &str| outcome_code(reply.results.iter().find(|r| r.backend == name).unwrap());
        assert_eq!(code("good"), "OK", "{reply:?}");
        assert_ne!(code("hostile"), "OK", "{reply:?}");
    }
    let (_, last) = replies.last().unwrap();
    println!(
        "{} calls; the hostile backend wrote {:.1} MiB; aggregator RSS {} -> {} KiB; last: {:?}",
        replies.len(),
        hostile.written_mib(),
        before,
        after,
        last.results
    );
    (after as f64 - before as f64) / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_floods_pings_and_never_reads() {
    let flood = HostileBackend::start(Misbehaviour::PingFlood).await;
    let grew = against(&flood).await;
    // The client stops reading while it cannot deliver its ACKs: the flood is held back by TCP,
    // not buffered in the aggregator.
    assert!(grew < 48.0, "aggregator RSS grew {grew:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_headers_never_end() {
    let endless = HostileBackend::start(Misbehaviour::EndlessContinuation).await;
    let grew = against(&endless).await;
    assert!(grew < 48.0, "aggregator RSS grew {grew:.1} MiB");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_is_not_http2_is_a_failure_not_a_hang() {
    let http1 = HostileBackend::start(Misbehaviour::Http1).await;
    let agg = start_aggregator(
        aggregator_config(vec![format!("http1={}", http1.url()).parse().unwrap()]),
        2,
    );
    let mut client = aggregator_client(&agg).await;
    let started = Instant::now();
    let reply = client.aggregate(aggregate("q")).await.unwrap().into_inner();
    let r = &reply.results[0];
    println!("{r:?}");
    // tonic reports a peer that breaks HTTP/2 as INTERNAL (the gRPC spec's mapping of a
    // PROTOCOL_ERROR: "frame with invalid size"), or, when the peer hung up first, the
    // connection as UNAVAILABLE.
    let code = outcome_code(r);
    assert!(code == "INTERNAL" || code == "UNAVAILABLE", "{r:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

/// How a test server is shut down: when this resolves.
type Stop = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// One of our backends served by a tonic server `serve` sets up (not `fanout_server`'s), on a
/// runtime of its own, until dropped.
fn backend_on<F, Fut>(name: &str, latency: &str, serve: F) -> fanout_server::thread::ServerThread
where
    F: FnOnce(BackendServer<backend::service::BackendService>, TcpIncoming, Stop) -> Fut
        + Send
        + 'static,
    Fut: std::future::Future<Output = Result<(), tonic::transport::Error>>,
{
    let config = backend_config(name, latency);
    fanout_server::thread::ServerThread::start(
        name,
        2,
        "127.0.0.1:0".parse().unwrap(),
        |listener, stop| {
            let service = backend::service::BackendService::new(config, Counters::default().into());
            let stop: Stop = Box::pin(async {
                let _ = stop.await;
            });
            serve(
                BackendServer::new(service),
                TcpIncoming::from(listener),
                stop,
            )
        },
    )
    .expect("start the backend")
}

/// A backend server that takes two streams per connection at a time (an h2 setting grpcio and
/// proxies use too), in front of one of ours.
fn narrow_backend() -> fanout_server::thread::ServerThread {
    backend_on("narrow", "20ms", |service, incoming, stop| {
        tonic::transport::Server::builder()
            .max_concurrent_streams(2)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, stop)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_twenty_to_a_backend_that_takes_two_streams() {
    let narrow = narrow_backend();
    let agg = start_aggregator(
        aggregator_config(vec![
            format!("narrow=http://{}", narrow.addr()).parse().unwrap(),
        ]),
        2,
    );
    let client = aggregator_client(&agg).await;
    let calls: Vec<_> = (0..20)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move { c.aggregate(aggregate(&format!("q{i}"))).await })
        })
        .collect();
    let mut ok = 0;
    for call in calls {
        let reply = call
            .await
            .unwrap()
            .expect("the call succeeds as a whole")
            .into_inner();
        let r = &reply.results[0];
        assert_eq!(outcome_code(r), "OK", "{r:?}");
        ok += 1;
    }
    assert_eq!(ok, 20);
}

/// One of our backends whose server compresses its replies with gzip whenever the caller
/// accepts it (as grpcio servers with compression on do); `zipped` says whether it did.
fn gzip_backend(zipped: Arc<AtomicBool>) -> fanout_server::thread::ServerThread {
    backend_on("zipped", "1ms", move |service, incoming, stop| {
        let seen = tower::ServiceBuilder::new().map_response(move |res: http::Response<_>| {
            if res
                .headers()
                .get("grpc-encoding")
                .is_some_and(|e| e == "gzip")
            {
                zipped.store(true, Ordering::Relaxed);
            }
            res
        });
        tonic::transport::Server::builder()
            .layer(seen)
            .add_service(service.send_compressed(CompressionEncoding::Gzip))
            .serve_with_incoming_shutdown(incoming, stop)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gzip_compressing_backend_answers_normally() {
    let compressed = Arc::new(AtomicBool::new(false));
    let zipped = gzip_backend(compressed.clone());
    let agg = start_aggregator(
        aggregator_config(vec![
            format!("zipped=http://{}", zipped.addr()).parse().unwrap(),
        ]),
        2,
    );
    let mut client = aggregator_client(&agg).await;
    let reply = client
        .aggregate(aggregate("squeeze me"))
        .await
        .unwrap()
        .into_inner();
    let r = &reply.results[0];
    assert_eq!(outcome_code(r), "OK", "{r:?}");
    let Some(fanout_proto::v1::backend_result::Outcome::Reply(fetched)) = &r.outcome else {
        unreachable!()
    };
    assert_eq!(fetched.query, "squeeze me");
    assert!(
        compressed.load(Ordering::Relaxed),
        "the reply went uncompressed"
    );
}

/// gRFC A8: a client told GOAWAY `too_many_pings` pings half as often from then on. Each of the
/// backend's connections sees its first PING twice as late as the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_backs_off_when_the_backend_says_too_many_pings() {
    let police = HostileBackend::start(Misbehaviour::PolicesPings).await;
    let agg = start_aggregator(
        AggregatorConfig {
            keepalive_interval: Duration::from_millis(100),
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(5),
            retry: aggregator::RetryPolicy {
                max_attempts: 5,
                backoff_base: Duration::from_millis(1),
                backoff_cap: Duration::from_millis(2),
                ..Default::default()
            },
            ..aggregator_config(vec![format!("police={}", police.url()).parse().unwrap()])
        },
        2,
    );
    let mut client = aggregator_client(&agg).await;
    let reply = client.aggregate(aggregate("q")).await.unwrap().into_inner();
    let pings = police.first_pings.lock().unwrap().clone();
    println!(
        "first PING per connection: {pings:?}; {:?}",
        reply.results[0]
    );
    // Each attempt's connection was turned away at its first PING, and the call stayed retryable.
    assert_eq!(outcome_code(&reply.results[0]), "UNAVAILABLE", "{reply:?}");
    assert!(pings.len() >= 4, "{pings:?}");
    for pair in pings.windows(2) {
        let ratio = pair[1].as_secs_f64() / pair[0].as_secs_f64();
        assert!((1.6..2.6).contains(&ratio), "{pings:?}");
    }
}
