//! A backend name that stands for several replicas: calls spread evenly over equal ones, a slow
//! one is avoided, a dead one is ejected (and its calls retried on the others) and comes back by
//! itself, and the set follows what the name resolves to.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aggregator::client::replicas::Resolve;
use aggregator::{ReplicaPolicy, Resolver};
use fanout_proto::v1::{EndpointStats, ServerStats};
use fanout_tests::*;
use futures::future::BoxFuture;

/// An aggregator whose backend `b` is `urls`, with the given ejection settings.
fn aggregator_over(
    urls: &[String],
    policy: ReplicaPolicy,
    resolver: Resolver,
) -> fanout_server::thread::ServerThread {
    let specs = urls
        .iter()
        .map(|u| format!("b={u}").parse().unwrap())
        .collect();
    start_aggregator(
        AggregatorConfig {
            replicas: policy,
            resolver,
            ..aggregator_config(specs)
        },
        2,
    )
}

/// `calls` aggregate calls from 8 callers at once; each must succeed with `b` OK.
async fn calls(agg: &fanout_server::thread::ServerThread, calls: usize) {
    let client = aggregator_client(agg).await;
    let tasks: Vec<_> = (0..8)
        .map(|caller| {
            let mut c = client.clone();
            tokio::spawn(async move {
                for i in 0..calls / 8 {
                    let reply = c
                        .aggregate(aggregate(&format!("c{caller}-{i}")))
                        .await
                        .expect("the call succeeds as a whole")
                        .into_inner();
                    assert_eq!(outcome_code(&reply.results[0]), "OK", "{reply:?}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

async fn endpoints(agg: &fanout_server::thread::ServerThread) -> Vec<EndpointStats> {
    let stats: ServerStats = aggregator_stats(&mut aggregator_client(agg).await).await;
    stats.endpoints
}

/// Each endpoint's share of the calls served.
fn shares(endpoints: &[EndpointStats]) -> Vec<f64> {
    let total: u64 = endpoints.iter().map(|e| e.served).sum();
    endpoints
        .iter()
        .map(|e| e.served as f64 / total.max(1) as f64)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equal_replicas_share_the_calls() {
    let replicas: Vec<_> = (0..3)
        .map(|_| start_backend(backend_config("b", "5ms"), 2))
        .collect();
    let urls: Vec<String> = replicas.iter().map(|r| r.url()).collect();
    let agg = aggregator_over(&urls, ReplicaPolicy::default(), Resolver::default());
    calls(&agg, 600).await;
    let eps = endpoints(&agg).await;
    let shares = shares(&eps);
    println!("shares {shares:?}: {eps:?}");
    assert_eq!(eps.len(), 3);
    // A third each, give or take: power of two choices over calls in flight.
    for s in &shares {
        assert!((0.2..0.47).contains(s), "{shares:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_replica_is_avoided() {
    let fast1 = start_backend(backend_config("b", "5ms"), 2);
    let fast2 = start_backend(backend_config("b", "5ms"), 2);
    let slow = start_backend(backend_config("b", "50ms"), 2);
    let urls = vec![fast1.url(), fast2.url(), slow.url()];
    let agg = aggregator_over(&urls, ReplicaPolicy::default(), Resolver::default());
    calls(&agg, 600).await;
    let eps = endpoints(&agg).await;
    let slow_share = shares(&eps)[2];
    println!("slow replica's share {slow_share:.3}: {eps:?}");
    // Spread evenly it would get a third; with more calls stuck on it, it loses most choices.
    assert!(
        slow_share < 0.2,
        "the slow replica served {slow_share:.3} of calls"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replica_is_known_down_its_calls_retried_elsewhere_and_it_stays_out() {
    let live1 = start_backend(backend_config("b", "2ms"), 2);
    let live2 = start_backend(backend_config("b", "2ms"), 2);
    let dead = dead_spec("b").url;
    let urls = vec![live1.url(), live2.url(), dead.clone()];
    let policy = ReplicaPolicy {
        eject_after: 3,
        eject_time: Duration::from_millis(600),
        ..ReplicaPolicy::default()
    };
    let agg = aggregator_over(&urls, policy, Resolver::default());
    // Every call succeeds: an attempt that lands on the dead replica is retried on another.
    calls(&agg, 200).await;
    let eps = endpoints(&agg).await;
    println!("after 200 calls: {eps:?}");
    let dead_ep = &eps[2];
    // Two connections refused in a row: known down, and no call goes to it any more.
    assert!(dead_ep.down, "{dead_ep:?}");
    assert!(dead_ep.failed <= 4, "{dead_ep:?}");
    // Longer than an ejection would last: still down (health checks find nothing there), and
    // no call was spent on it meanwhile.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    calls(&agg, 40).await;
    let later = &endpoints(&agg).await[2];
    println!("later: {later:?}");
    assert!(later.down, "{later:?}");
    assert_eq!(later.failed, dead_ep.failed, "{later:?}");
}

/// A resolver whose answers the test sets.
#[derive(Clone, Default)]
struct Fake(Arc<Mutex<Vec<SocketAddr>>>);

impl Resolve for Fake {
    fn resolve(
        &self,
        host: &str,
        _port: u16,
    ) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let addrs = self.0.lock().unwrap().clone();
        let host = host.to_owned();
        Box::pin(async move {
            if addrs.is_empty() {
                Err(std::io::Error::other(format!("no such host {host}")))
            } else {
                Ok(addrs)
            }
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_set_follows_what_the_name_resolves_to() {
    let r1 = start_backend(backend_config("b", "2ms"), 2);
    let r2 = start_backend(backend_config("b", "2ms"), 2);
    let fake = Fake::default();
    *fake.0.lock().unwrap() = vec![r1.addr()];
    let policy = ReplicaPolicy {
        resolve_interval: Duration::from_millis(100),
        ..ReplicaPolicy::default()
    };
    let agg = aggregator_over(
        &["http://backend-b.test:50061".to_owned()],
        policy,
        Resolver(Arc::new(fake.clone())),
    );
    calls(&agg, 16).await;
    let eps = endpoints(&agg).await;
    assert_eq!(
        eps.iter().map(|e| e.address.clone()).collect::<Vec<_>>(),
        vec![r1.addr().to_string()]
    );
    // A second address appears: it is added and gets calls.
    fake.0.lock().unwrap().push(r2.addr());
    assert!(
        eventually(Duration::from_secs(3), || async {
            endpoints(&agg).await.len() == 2
        })
        .await,
        "the new address was not added"
    );
    calls(&agg, 80).await;
    let eps = endpoints(&agg).await;
    assert!(eps.iter().all(|e| e.served > 0), "{eps:?}");
    // The name fails to resolve: the last good set stays.
    fake.0.lock().unwrap().clear();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(endpoints(&agg).await.len(), 2);
    calls(&agg, 16).await;
    // The first address vanishes: it is removed.
    *fake.0.lock().unwrap() = vec![r2.addr()];
    assert!(
        eventually(Duration::from_secs(3), || async {
            endpoints(&agg).await.len() == 1
        })
        .await,
        "the vanished address was not removed"
    );
    assert_eq!(endpoints(&agg).await[0].address, r2.addr().to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_never_resolves_is_that_backends_failure() {
    let agg = aggregator_over(
        &["http://no-such-backend.invalid:50061".to_owned()],
        ReplicaPolicy::default(),
        Resolver(Arc::new(Fake::default())),
    );
    let mut client = aggregator_client(&agg).await;
    let reply = client.aggregate(aggregate("q")).await.unwrap().into_inner();
    let r = &reply.results[0];
    println!("{r:?}");
    assert_eq!(outcome_code(r), "UNAVAILABLE", "{r:?}");
    let Some(fanout_proto::v1::backend_result::Outcome::Failure(f)) = &r.outcome else {
        unreachable!()
    };
    assert!(f.message.contains("did not resolve"), "{r:?}");
}

/// A replica that died is ejected for a long time (30 s here), but a health probe notices its
/// return: restarted at the same address, it takes calls again within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_replica_is_called_again_long_before_its_ejection_ends() {
    let steady = start_backend(backend_config("b", "2ms"), 2);
    let victim = start_backend(backend_config("b", "2ms"), 2);
    let victim_addr = victim.addr();
    let policy = ReplicaPolicy {
        eject_after: 2,
        eject_time: Duration::from_secs(30),
        ..ReplicaPolicy::default()
    };
    let agg = aggregator_over(&[steady.url(), victim.url()], policy, Resolver::default());
    calls(&agg, 16).await;
    tokio::task::spawn_blocking(move || victim.stop())
        .await
        .unwrap();
    // Calls keep succeeding (retried on the steady replica) while the victim gets ejected.
    calls(&agg, 40).await;
    let eps = endpoints(&agg).await;
    assert!(eps[1].ejected, "the dead replica was not ejected: {eps:?}");
    let restarted = backend::spawn(backend_config("b", "2ms"), 2, victim_addr).expect("restart");
    let back = std::time::Instant::now();
    let again = backend_client(&restarted).await;
    let served_again = eventually(Duration::from_secs(5), || {
        let (agg, mut again) = (&agg, again.clone());
        async move {
            calls(agg, 8).await;
            backend_stats(&mut again).await.served > 0
        }
    })
    .await;
    let took = back.elapsed();
    println!(
        "the restarted replica served again after {took:?}: {:?}",
        endpoints(&agg).await
    );
    assert!(served_again, "the restarted replica got no call within 5 s");
    assert!(took < Duration::from_secs(3), "{took:?}");
}
