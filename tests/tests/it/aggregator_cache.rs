//! The result cache: hits are marked `from_cache` and never reach the backend; failures are not
//! cached; `no_cache` bypasses it; ClearCache empties it.

use std::time::Duration;

use fanout_proto::v1::{AggregateRequest, ClearCacheRequest};
use fanout_tests::*;

#[tokio::test]
async fn hits_skip_the_backend_until_cleared() {
    let b = start_backend(backend_config("b", "5ms"), 2);
    let broken = start_backend(
        BackendConfig {
            fail_rate: 1.0,
            ..backend_config("x", "1ms")
        },
        2,
    );
    let config = AggregatorConfig {
        cache_ttl: Duration::from_secs(60),
        ..aggregator_config(vec![spec("b", &b), spec("x", &broken)])
    };
    let agg = start_aggregator(config, 2);
    let mut client = aggregator_client(&agg).await;
    let mut backend = backend_client(&b).await;
    let mut broken_client = backend_client(&broken).await;

    let first = client
        .aggregate(aggregate("weather"))
        .await
        .unwrap()
        .into_inner();
    assert!(first.results.iter().all(|r| !r.from_cache));
    let second = client
        .aggregate(aggregate("weather"))
        .await
        .unwrap()
        .into_inner();
    let hit = second.results.iter().find(|r| r.backend == "b").unwrap();
    assert!(hit.from_cache && hit.attempts == 0, "{hit:?}");
    assert_eq!(outcome_code(hit), "OK");
    let miss = second.results.iter().find(|r| r.backend == "x").unwrap();
    assert!(!miss.from_cache, "a failure was cached: {miss:?}");
    assert_eq!(backend_stats(&mut backend).await.served, 1);
    assert_eq!(
        backend_stats(&mut broken_client).await.served,
        2 * 3,
        "3 attempts per call"
    );

    // Another query misses; no_cache bypasses.
    let other = client
        .aggregate(aggregate("news"))
        .await
        .unwrap()
        .into_inner();
    assert!(other.results.iter().all(|r| !r.from_cache));
    let bypass = client
        .aggregate(AggregateRequest {
            no_cache: true,
            ..aggregate("weather")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(bypass.results.iter().all(|r| !r.from_cache));
    assert_eq!(backend_stats(&mut backend).await.served, 3);

    let cleared = client
        .clear_cache(ClearCacheRequest {})
        .await
        .unwrap()
        .into_inner()
        .cleared;
    assert_eq!(cleared, 2, "weather and news from b");
    let after = client
        .aggregate(aggregate("weather"))
        .await
        .unwrap()
        .into_inner();
    assert!(after.results.iter().all(|r| !r.from_cache));
    assert_eq!(aggregator_stats(&mut client).await.cache_hits, 1);
}
