//! Two literal scrapes, 2 s apart, and the numbers they come to.

use std::time::Instant;

use super::*;

/// Before: backend `a` has had 20 attempts (all OK), `b` 500; 100 whole calls, all OK.
const BEFORE: &str = r#"
# HELP rpc_server_call_duration_seconds Duration of the calls this server answered.
# TYPE rpc_server_call_duration_seconds histogram
rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Aggregator",rpc_method="Aggregate",rpc_grpc_status_code="0"} 100
rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Aggregator",rpc_method="AggregateStream",rpc_grpc_status_code="0"} 50
rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Aggregator",rpc_method="Stats",rpc_grpc_status_code="0"} 7
# TYPE rpc_client_call_duration_seconds histogram
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.005"} 10
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.01"} 15
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.025"} 20
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="+Inf"} 20
rpc_client_call_duration_seconds_count{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0"} 20
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.005"} 500
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.01"} 500
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.025"} 500
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="+Inf"} 500
rpc_client_call_duration_seconds_count{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0"} 500
# TYPE fanout_calls_shed_total counter
fanout_calls_shed_total 3
# TYPE fanout_backend_attempts_total counter
fanout_backend_attempts_total{backend="a"} 20
fanout_backend_attempts_total{backend="b"} 500
# TYPE fanout_backend_retries_total counter
fanout_backend_retries_total{backend="a"} 2
fanout_backend_retries_total{backend="b"} 0
# TYPE fanout_backend_hedges_total counter
fanout_backend_hedges_total{backend="a"} 0
fanout_backend_hedges_total{backend="b"} 0
# TYPE fanout_backend_in_flight_calls gauge
fanout_backend_in_flight_calls{backend="a"} 1
fanout_backend_in_flight_calls{backend="b"} 0
# TYPE fanout_backend_concurrency_limit gauge
fanout_backend_concurrency_limit{backend="a"} 40
fanout_backend_concurrency_limit{backend="b"} 10000
# TYPE fanout_backend_limit_refused_total counter
fanout_backend_limit_refused_total{backend="a"} 0
fanout_backend_limit_refused_total{backend="b"} 0
# TYPE fanout_backend_door_refused_total counter
fanout_backend_door_refused_total{backend="a"} 1
fanout_backend_door_refused_total{backend="b"} 0
# TYPE fanout_endpoint_attempts_total counter
fanout_endpoint_attempts_total{backend="a",endpoint="10.0.0.1:50051"} 100
fanout_endpoint_attempts_total{backend="a",endpoint="10.0.0.2:50051"} 20
fanout_endpoint_attempts_total{backend="b",endpoint="10.0.0.3:50051"} 500
"#;

/// After: `a` 96 more OK attempts and its first 4 UNAVAILABLE (a new series), 3 retries, a
/// hedge, 3 shed; `b` idle; 90 + 10 failed Aggregate calls, 2 more shed at the door.
const AFTER: &str = r#"
# TYPE rpc_server_call_duration_seconds histogram
rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Aggregator",rpc_method="Aggregate",rpc_grpc_status_code="0"} 190
rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Aggregator",rpc_method="Aggregate",rpc_grpc_status_code="14"} 10
rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Aggregator",rpc_method="AggregateStream",rpc_grpc_status_code="0"} 50
rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="fanout.v1.Aggregator",rpc_method="Stats",rpc_grpc_status_code="0"} 30
# TYPE rpc_client_call_duration_seconds histogram
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.005"} 50
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.01"} 95
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.025"} 116
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0",le="+Inf"} 116
rpc_client_call_duration_seconds_count{backend="a",rpc_method="Fetch",rpc_grpc_status_code="0"} 116
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="14",le="0.005"} 0
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="14",le="0.01"} 0
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="14",le="0.025"} 4
rpc_client_call_duration_seconds_bucket{backend="a",rpc_method="Fetch",rpc_grpc_status_code="14",le="+Inf"} 4
rpc_client_call_duration_seconds_count{backend="a",rpc_method="Fetch",rpc_grpc_status_code="14"} 4
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.005"} 500
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.01"} 500
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="0.025"} 500
rpc_client_call_duration_seconds_bucket{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0",le="+Inf"} 500
rpc_client_call_duration_seconds_count{backend="b",rpc_method="Fetch",rpc_grpc_status_code="0"} 500
# TYPE fanout_calls_shed_total counter
fanout_calls_shed_total 5
# TYPE fanout_backend_attempts_total counter
fanout_backend_attempts_total{backend="a"} 120
fanout_backend_attempts_total{backend="b"} 500
# TYPE fanout_backend_retries_total counter
fanout_backend_retries_total{backend="a"} 5
fanout_backend_retries_total{backend="b"} 0
# TYPE fanout_backend_hedges_total counter
fanout_backend_hedges_total{backend="a"} 1
fanout_backend_hedges_total{backend="b"} 0
# TYPE fanout_backend_in_flight_calls gauge
fanout_backend_in_flight_calls{backend="a"} 7
fanout_backend_in_flight_calls{backend="b"} 0
# TYPE fanout_backend_concurrency_limit gauge
fanout_backend_concurrency_limit{backend="a"} 32
fanout_backend_concurrency_limit{backend="b"} 10000
# TYPE fanout_backend_limit_refused_total counter
fanout_backend_limit_refused_total{backend="a"} 2
fanout_backend_limit_refused_total{backend="b"} 0
# TYPE fanout_backend_door_refused_total counter
fanout_backend_door_refused_total{backend="a"} 2
fanout_backend_door_refused_total{backend="b"} 0
# TYPE fanout_endpoint_attempts_total counter
fanout_endpoint_attempts_total{backend="a",endpoint="10.0.0.1:50051"} 148
fanout_endpoint_attempts_total{backend="a",endpoint="10.0.0.2:50051"} 72
fanout_endpoint_attempts_total{backend="b",endpoint="10.0.0.3:50051"} 500
"#;

fn scrape(text: &str) -> Scrape {
    Scrape::parse(text, Instant::now()).unwrap()
}

fn close(got: Option<f64>, want: f64) -> bool {
    got.is_some_and(|g| (g - want).abs() < 1e-9)
}

#[test]
fn two_scrapes_come_to_the_intervals_rates_errors_quantiles_and_shares() {
    let s = snapshot(&scrape(BEFORE), &scrape(AFTER), 2.0);
    // Whole calls: 90 OK + 10 UNAVAILABLE Aggregate, no AggregateStream; Stats not counted.
    assert_eq!(s.calls_per_sec, 50.0);
    assert!(close(s.error_rate, 0.1), "{:?}", s.error_rate);
    assert_eq!(s.shed, 2.0);
    assert_eq!(s.backends.len(), 2);

    let a = &s.backends[0];
    assert_eq!(a.name, "a");
    // 96 OK + 4 failed attempts in 2 s.
    assert_eq!(a.calls_per_sec, 50.0);
    assert!(close(a.error_rate, 0.04), "{:?}", a.error_rate);
    // Bucket increases, both codes: <=5ms 40, <=10ms 80, <=25ms 100, +Inf 100.
    // p50: rank 50 in (5ms, 10ms], 10 of its 40: 5 + 5 * 10/40 = 6.25 ms.
    assert!(close(a.p50, 0.00625), "{:?}", a.p50);
    // p99: rank 99 in (10ms, 25ms], 19 of its 20: 10 + 15 * 19/20 = 24.25 ms.
    assert!(close(a.p99, 0.02425), "{:?}", a.p99);
    assert_eq!((a.limit, a.in_flight), (Some(32.0), Some(7.0)));
    assert_eq!((a.shed, a.retries, a.hedges), (3.0, 3.0, 1.0));
    assert_eq!(
        a.replicas,
        [
            ("10.0.0.1:50051".to_owned(), Some(0.48)),
            ("10.0.0.2:50051".to_owned(), Some(0.52))
        ]
    );

    // `b` made no attempt: no rate of errors, no quantiles, no shares; its gauges still shown.
    let b = &s.backends[1];
    assert_eq!((b.name.as_str(), b.calls_per_sec), ("b", 0.0));
    assert_eq!((b.error_rate, b.p50, b.p99), (None, None, None));
    assert_eq!(b.limit, Some(10000.0));
    assert_eq!(b.replicas, [("10.0.0.3:50051".to_owned(), None)]);
}

#[test]
fn a_restarted_aggregator_counts_from_zero() {
    // AFTER then BEFORE: every counter went down, so each counts from zero.
    let s = snapshot(&scrape(AFTER), &scrape(BEFORE), 1.0);
    assert_eq!(s.shed, 3.0);
    assert_eq!(
        s.calls_per_sec, 100.0,
        "Aggregate: 100 from zero, AggregateStream: none"
    );
    // No failed call among them: 0%, not -0% (a sum of nothing is -0.0).
    assert!(
        s.error_rate
            .is_some_and(|r| r == 0.0 && r.is_sign_positive()),
        "{:?}",
        s.error_rate
    );
    let a = &s.backends[0];
    assert_eq!(a.calls_per_sec, 20.0);
    // Its histogram as a whole is new: 10 in <=5ms, 15 in <=10ms, 20 in <=25ms.
    assert!(close(a.p50, 0.005), "{:?}", a.p50);
    assert_eq!(counter_increase(Some(7.0), 3.0), 3.0);
    assert_eq!(counter_increase(None, 3.0), 3.0);
    assert_eq!(counter_increase(Some(1.0), 3.0), 2.0);
}

#[test]
fn quantiles_follow_histogram_quantile() {
    let inf = f64::INFINITY;
    // Rank in the first bucket: from 0.
    assert_eq!(quantile(0.5, &[(0.1, 10.0), (inf, 10.0)]), Some(0.05));
    // Rank in +Inf: the highest finite bound.
    assert_eq!(
        quantile(0.99, &[(0.1, 10.0), (0.2, 90.0), (inf, 100.0)]),
        Some(0.2)
    );
    // Exactly at a bucket's top.
    assert_eq!(
        quantile(0.9, &[(0.1, 10.0), (0.2, 90.0), (inf, 100.0)]),
        Some(0.2)
    );
    // No observations, no +Inf, or nothing at all: no quantile.
    assert_eq!(quantile(0.5, &[(0.1, 0.0), (inf, 0.0)]), None);
    assert_eq!(quantile(0.5, &[(0.1, 5.0), (0.2, 5.0)]), None);
    assert_eq!(quantile(0.5, &[]), None);
    // A count lower than the bucket below it is evened out.
    assert_eq!(
        quantile(0.5, &[(0.1, 10.0), (0.2, 8.0), (inf, 10.0)]),
        Some(0.05)
    );
}

#[test]
fn shares_of_nothing_are_none() {
    let s = shares(&[("x".into(), 1.0), ("y".into(), 3.0)]);
    assert_eq!(s, [("x".into(), Some(0.25)), ("y".into(), Some(0.75))]);
    assert_eq!(shares(&[("x".into(), 0.0)]), [("x".into(), None)]);
    assert_eq!(ratio(1.0, 0.0), None);
}
