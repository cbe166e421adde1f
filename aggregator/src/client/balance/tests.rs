//! The balance alone, over replicas at addresses nothing listens on (TEST-NET-1), without a
//! socket: an endpoint is made silent through its own count, and a call that does reach an
//! endpoint is polled only up to its pick (the channel's connection task never runs, so
//! nothing connects). What the call then does at the endpoint needs a server: the
//! integration tests (`tests/tests/it/aggregator_replicas.rs`) run those.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use fanout_proto::v1::FetchRequest;
use fanout_tls::ClientTls;
use tokio::time::Instant;
use tower::Service;

use super::Balance;
use crate::client::Call;
use crate::client::call::Tried;
use crate::client::error::CallError;
use crate::client::fetch::Keepalive;
use crate::client::replicas::{Pick, Replica, ReplicaPolicy, Replicas, Resolver};
use crate::client::silence::SILENT_AFTER;
use crate::client::testing::param;

/// A backend of `n` endpoints, none of them reachable, and its balance.
fn backend(n: usize) -> (Balance, Arc<Replicas>, Vec<Arc<Replica>>) {
    let urls: Vec<String> = (1..=n)
        .map(|i| format!("http://192.0.2.{i}:50051"))
        .collect();
    let keepalive = Keepalive {
        interval: Duration::from_secs(10),
        timeout: Duration::from_secs(20),
    };
    let replicas = Replicas::start(
        "b".into(),
        &urls,
        ReplicaPolicy::default(),
        keepalive,
        ClientTls::system(),
        Resolver::default(),
    );
    let set = replicas.current().to_vec();
    assert_eq!(set.len(), n);
    let balance = Balance::new(replicas.clone(), keepalive, ClientTls::system());
    (balance, replicas, set)
}

/// Makes `r` silent: calls given up on in a row with no answer in between.
fn silence(r: &Replica) {
    for _ in 0..SILENT_AFTER {
        r.silence.given_up(Duration::ZERO);
    }
    assert!(r.is_down());
}

fn request() -> Call<FetchRequest> {
    Call::new(
        FetchRequest::default(),
        Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    )
}

/// Where `balance` sends a call of `req`: the call is polled once, up to the send, and dropped.
fn sent_to(balance: &mut Balance, req: &Call<FetchRequest>) -> u64 {
    let before = param::<Tried>(req).ids().len();
    {
        let call = pin!(balance.call(req.clone()));
        let waker = futures::task::noop_waker();
        let polled = call.poll(&mut std::task::Context::from_waker(&waker));
        assert!(polled.is_pending(), "{:?}", polled.map(|r| r.map(|_| ())));
    }
    let tried = param::<Tried>(req).ids();
    assert_eq!(tried.len(), before + 1);
    tried[before]
}

fn picked(replicas: &Replicas, tried: &[u64]) -> u64 {
    match replicas.pick(tried) {
        Pick::Endpoint(r) => r.id,
        other => panic!("{other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_prefers_an_endpoint_it_has_not_tried() {
    let (mut balance, replicas, set) = backend(3);
    let (a, b, c) = (set[0].id, set[1].id, set[2].id);
    for _ in 0..50 {
        assert_eq!(picked(&replicas, &[a, b]), c);
        assert_ne!(picked(&replicas, &[a]), a);
    }
    // Through the balance: a retry after a and b goes to c, and the call notes it.
    for _ in 0..20 {
        let req = request();
        param::<Tried>(&req).note(a);
        param::<Tried>(&req).note(b);
        assert_eq!(sent_to(&mut balance, &req), c);
    }
    // Every endpoint tried: any of them again.
    let req = request();
    for id in [a, b, c] {
        param::<Tried>(&req).note(id);
    }
    assert!([a, b, c].contains(&sent_to(&mut balance, &req)));
}

#[tokio::test(start_paused = true)]
async fn a_down_endpoint_takes_no_call_even_when_the_other_was_tried() {
    let (mut balance, replicas, set) = backend(2);
    let (down, up) = (&set[0], set[1].id);
    silence(down);
    for _ in 0..50 {
        assert_eq!(picked(&replicas, &[]), up);
        assert_eq!(picked(&replicas, &[up]), up, "tried, but the only one up");
    }
    for _ in 0..20 {
        let req = request();
        assert_eq!(sent_to(&mut balance, &req), up);
        assert_eq!(sent_to(&mut balance, &req), up);
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_fails_at_once_when_every_endpoint_is_down_saying_why() {
    let (mut balance, _, set) = backend(2);
    for r in &set {
        silence(r);
    }
    let req = request();
    let start = Instant::now();
    let error = balance.call(req.clone()).await.unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    let CallError::Down(why) = &error else {
        panic!("{error:?}")
    };
    for r in &set {
        assert!(why.contains(&format!("{} is silent", r.addr)), "{why}");
    }
    assert!(!error.retryable(), "a retry would find them down too");
    assert!(
        param::<Tried>(&req).ids().is_empty(),
        "no endpoint was called"
    );
}
