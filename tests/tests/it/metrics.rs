//! `--metrics-listen`: both servers' `/metrics`, scraped while they run and parsed by the
//! Prometheus project's own Python parser (`prometheus_client`, tests/py/prometheus_json.py).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use aggregator::client::hedge::HedgeAfter;
use fanout_proto::v1::AggregateRequest;
use fanout_tests::local::free_addr;
use fanout_tests::*;
use serde_json::Value;

/// A Python with `prometheus_client` (a virtual environment of the tests' own under `target/`).
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| {
        fanout_tests::local::python(
            "python",
            "prometheus_client.parser",
            "prometheus-client==0.26.0",
        )
    })
}

/// The samples at `addr`'s `/metrics`, as the Python parser read them.
fn scrape(addr: SocketAddr) -> Vec<Value> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/prometheus_json.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("http://{addr}/metrics"))
        .output()
        .expect("python3 runs (the tests need it, with prometheus-client from PyPI)");
    assert!(
        out.status.success(),
        "scraping {addr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("JSON from the scraper");
    assert!(
        parsed["content_type"]
            .as_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{parsed}"
    );
    parsed["samples"].as_array().unwrap().clone()
}

/// The value of the sample called `name` whose labels include all of `labels` (0 when absent).
fn value(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name)
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_in_the_server_histogram_and_each_backend_has_its_own_series() {
    let (a_metrics, b_metrics, agg_metrics) = (free_addr(), free_addr(), free_addr());
    let a = start_backend(
        BackendConfig {
            metrics_listen: Some(a_metrics),
            ..backend_config("a", "2ms")
        },
        2,
    );
    let b = start_backend(
        BackendConfig {
            metrics_listen: Some(b_metrics),
            ..backend_config("b", "2ms")
        },
        2,
    );
    let agg = start_aggregator(
        AggregatorConfig {
            metrics_listen: Some(agg_metrics),
            ..aggregator_config(vec![spec("a", &a), spec("b", &b)])
        },
        2,
    );
    let mut client = aggregator_client(&agg).await;
    const CALLS: usize = 7;
    for i in 0..CALLS {
        client.aggregate(aggregate(&format!("q{i}"))).await.unwrap();
    }
    let unknown = AggregateRequest {
        backends: vec!["nope".into()],
        ..aggregate("q")
    };
    let bad = client.aggregate(unknown).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument);

    let s = scrape(agg_metrics);
    let aggregate_calls = |code| {
        let labels = [
            ("rpc_system", "grpc"),
            ("rpc_service", "fanout.v1.Aggregator"),
            ("rpc_method", "Aggregate"),
            ("rpc_grpc_status_code", code),
        ];
        value(&s, "rpc_server_call_duration_seconds_count", &labels)
    };
    assert_eq!(aggregate_calls("0"), CALLS as f64);
    assert_eq!(aggregate_calls("3"), 1.0, "the INVALID_ARGUMENT call");
    for backend in ["a", "b"] {
        let ok = [
            ("backend", backend),
            ("rpc_method", "Fetch"),
            ("rpc_grpc_status_code", "0"),
        ];
        assert_eq!(
            value(&s, "rpc_client_call_duration_seconds_count", &ok),
            CALLS as f64,
            "{backend}"
        );
        let attempts = value(&s, "fanout_backend_attempts_total", &[("backend", backend)]);
        assert_eq!(attempts, CALLS as f64, "{backend}");
        let endpoint = value(
            &s,
            "fanout_endpoint_attempts_total",
            &[("backend", backend)],
        );
        assert_eq!(endpoint, CALLS as f64, "{backend}");
    }
    // A histogram's buckets are cumulative: +Inf holds every call.
    let inf = [
        ("rpc_method", "Aggregate"),
        ("rpc_grpc_status_code", "0"),
        ("le", "+Inf"),
    ];
    assert_eq!(
        value(&s, "rpc_server_call_duration_seconds_bucket", &inf),
        CALLS as f64
    );

    for (addr, name) in [(a_metrics, "a"), (b_metrics, "b")] {
        let s = scrape(addr);
        let fetch = [("rpc_method", "Fetch"), ("rpc_grpc_status_code", "0")];
        assert_eq!(
            value(&s, "rpc_server_call_duration_seconds_count", &fetch),
            CALLS as f64,
            "{name}"
        );
        let by_mode = [("mode", "async"), ("rpc_grpc_status_code", "0")];
        assert_eq!(
            value(&s, "fanout_fetch_duration_seconds_count", &by_mode),
            CALLS as f64
        );
        let delay = value(&s, "fanout_fetch_delay_seconds_sum", &[("mode", "async")]);
        assert!((delay - CALLS as f64 * 0.002).abs() < 1e-6, "{delay}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_a_hedge_and_a_shed_call_each_move_their_counter() {
    let failing = start_backend(
        BackendConfig {
            fail_rate: 1.0,
            ..backend_config("failing", "1ms")
        },
        2,
    );
    let slow = start_backend(backend_config("slow", "100ms"), 2);
    let stuck = start_backend(backend_config("stuck", "10s"), 2);
    let metrics = free_addr();
    let specs = vec![
        spec("failing", &failing),
        spec("slow", &slow),
        spec("stuck", &stuck),
    ];
    let mut config = aggregator_config(specs);
    config.deadline = Duration::from_secs(20);
    config.attempt_timeout = Duration::from_secs(20);
    config.metrics_listen = Some(metrics);
    config.max_in_flight = aggregator::Admission::Fixed(1);
    config.hedge.after = Some(HedgeAfter::Fixed(Duration::from_millis(30)));
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let only = |backend: &str| AggregateRequest {
        backends: vec![backend.into()],
        ..aggregate("q")
    };
    let counter = |name: &str, backend: &str| {
        let labels: &[(&str, &str)] = if backend.is_empty() {
            &[]
        } else {
            &[("backend", backend)]
        };
        value(&scrape(metrics), name, labels)
    };
    assert_eq!(counter("fanout_backend_retries_total", "failing"), 0.0);
    assert_eq!(counter("fanout_backend_hedges_total", "slow"), 0.0);
    assert_eq!(counter("fanout_calls_shed_total", ""), 0.0);

    // A failing backend's attempts are retried.
    client.aggregate(only("failing")).await.unwrap();
    assert!(counter("fanout_backend_retries_total", "failing") >= 1.0);
    let unavailable = [("backend", "failing"), ("rpc_grpc_status_code", "14")];
    assert!(
        value(
            &scrape(metrics),
            "rpc_client_call_duration_seconds_count",
            &unavailable
        ) >= 2.0
    );

    // A slow one is hedged after 30 ms.
    client.aggregate(only("slow")).await.unwrap();
    assert!(counter("fanout_backend_hedges_total", "slow") >= 1.0);

    // With one call admitted at a time, a second one while the first waits is shed.
    let mut first = client.clone();
    let running = tokio::spawn(async move { first.aggregate(only("stuck")).await });
    let stats = client.clone();
    let admitted = eventually(Duration::from_secs(5), || {
        let mut stats = stats.clone();
        async move { aggregator_stats(&mut stats).await.in_flight >= 1 }
    })
    .await;
    assert!(admitted, "the first call is in flight");
    let shed = client.aggregate(only("slow")).await.unwrap_err();
    assert_eq!(shed.code(), tonic::Code::ResourceExhausted, "{shed:?}");
    assert_eq!(counter("fanout_calls_shed_total", ""), 1.0);
    running.abort();
}
