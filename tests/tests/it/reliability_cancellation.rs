//! Callers that give up at random moments under load (dropping the call, sending a short
//! `grpc-timeout`, dropping a stream after its first result, or closing their connection) leave
//! nothing behind: afterwards the aggregator's and every backend's in-flight counts return to
//! zero, the backends counted the calls they stopped waiting for as cancelled, and every
//! in-flight permit and per-backend slot is free again.

use std::collections::BTreeMap;
use std::time::Duration;

use fanout_proto::v1::AggregateRequest;
use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_tests::load::{Load, Rng, seed};
use fanout_tests::*;
use tonic::transport::{Channel, Endpoint};

/// How a caller leaves a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Leave {
    /// Drops the call (an RST_STREAM) after a while, as `asyncio.wait_for` or a closed tab does.
    Drop,
    /// Sends a short `grpc-timeout`: the deadline ends it on both sides.
    Deadline,
    /// Streams, and hangs up after the first result.
    FirstResult,
    /// Closes its whole connection after a while.
    Disconnect,
    /// Waits for the answer (so the load also has complete calls).
    Stay,
}

/// What the caller saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Seen {
    Answered,
    GaveUp,
    Status(&'static str),
}

fn request(query: String) -> AggregateRequest {
    AggregateRequest {
        query,
        ..Default::default()
    }
}

/// One call, `stream`ing or not, left as `leave` says after `after`.
async fn call(
    mut client: AggregatorClient<Channel>,
    url: String,
    query: String,
    stream: bool,
    leave: Leave,
    after: Duration,
) -> Seen {
    let status = |r: Result<(), tonic::Status>| match r {
        Ok(()) => Seen::Answered,
        Err(s) => Seen::Status(fanout_proto::code_name(s.code())),
    };
    let whole = |mut c: AggregatorClient<Channel>, req: tonic::Request<AggregateRequest>| async move {
        if stream {
            let mut events = c.aggregate_stream(req).await?.into_inner();
            while events.message().await?.is_some() {}
        } else {
            c.aggregate(req).await?;
        }
        Ok::<(), tonic::Status>(())
    };
    match leave {
        Leave::Stay => status(whole(client, tonic::Request::new(request(query))).await),
        Leave::Drop => {
            match tokio::time::timeout(after, whole(client, tonic::Request::new(request(query))))
                .await
            {
                Ok(r) => status(r),
                Err(_) => Seen::GaveUp,
            }
        }
        Leave::Deadline => {
            let mut req = tonic::Request::new(request(query));
            req.set_timeout(after);
            status(whole(client, req).await)
        }
        Leave::FirstResult => {
            let first = async {
                let mut events = client.aggregate_stream(request(query)).await?.into_inner();
                events.message().await?;
                Ok::<(), tonic::Status>(())
            };
            match first.await {
                Ok(()) => Seen::GaveUp,
                Err(s) => Seen::Status(fanout_proto::code_name(s.code())),
            }
        }
        Leave::Disconnect => {
            // A connection of its own, closed when this call is abandoned.
            let channel = Endpoint::from_shared(url).unwrap().connect().await.unwrap();
            let own = AggregatorClient::new(channel);
            match tokio::time::timeout(after, whole(own, tonic::Request::new(request(query)))).await
            {
                Ok(r) => status(r),
                Err(_) => Seen::GaveUp,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_that_give_up_at_random_moments_leave_nothing_behind() {
    let backends: Vec<_> = ["b1", "b2", "b3"]
        .iter()
        .map(|name| {
            let server = start_backend(backend_config(name, "uniform:100ms..300ms"), 2);
            (name.to_string(), server)
        })
        .collect();
    // Small enough limits that a leaked permit or slot would show in the final burst below.
    const LIMIT: usize = 32;
    let agg = start_aggregator(
        AggregatorConfig {
            max_in_flight: aggregator::Admission::Fixed(LIMIT),
            backend_concurrency: aggregator::Limit::Fixed(LIMIT),
            ..aggregator_config(backends.iter().map(|(n, s)| spec(n, s)).collect())
        },
        2,
    );
    let client = aggregator_client(&agg).await;
    let url = agg.url();
    let base_seed = seed();

    let load = Load::start(16, Duration::from_secs(10), {
        let client = client.clone();
        move |caller, i| {
            let mut rng = Rng::new(base_seed ^ ((caller as u64) << 32) ^ i);
            let leave = [
                Leave::Drop,
                Leave::Deadline,
                Leave::FirstResult,
                Leave::Disconnect,
                Leave::Stay,
            ][rng.below(5) as usize];
            // FirstResult always streams.
            let stream = leave == Leave::FirstResult || rng.below(2) == 0;
            let after = rng.duration(Duration::from_millis(5), Duration::from_millis(350));
            let fut = call(
                client.clone(),
                url.clone(),
                format!("c{caller}-{i}"),
                stream,
                leave,
                after,
            );
            async move { (leave, stream, fut.await) }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let samples = load.finish().await;

    let mut seen: BTreeMap<(Leave, bool, Seen), usize> = BTreeMap::new();
    for s in &samples {
        *seen.entry(s.value).or_default() += 1;
    }
    let gave_up = samples
        .iter()
        .filter(|s| matches!(s.value.2, Seen::GaveUp | Seen::Status(_)))
        .count();

    // Nothing stays in flight anywhere.
    let settled = eventually(Duration::from_secs(5), || {
        let mut c = client.clone();
        let urls: Vec<String> = backends.iter().map(|(_, s)| s.url()).collect();
        async move {
            if aggregator_stats(&mut c).await.in_flight != 0 {
                return false;
            }
            for url in urls {
                let mut b = fanout_proto::v1::backend_client::BackendClient::connect(url)
                    .await
                    .unwrap();
                if backend_stats(&mut b).await.in_flight != 0 {
                    return false;
                }
            }
            true
        }
    })
    .await;
    let agg_stats = aggregator_stats(&mut client.clone()).await;
    let mut backend_cancelled = 0;
    let mut backend_report = Vec::new();
    for (name, server) in &backends {
        let s = backend_stats(&mut backend_client(server).await).await;
        backend_cancelled += s.cancelled;
        backend_report.push(format!(
            "{name}: in_flight {} served {} cancelled {}",
            s.in_flight, s.served, s.cancelled
        ));
    }
    println!(
        "{} calls, {gave_up} given up or ended by their deadline; by (how, streaming, seen): \
         {seen:?}\naggregator: in_flight {} served {} cancelled {} shed {}; {}",
        samples.len(),
        agg_stats.in_flight,
        agg_stats.served,
        agg_stats.cancelled,
        agg_stats.shed,
        backend_report.join("; ")
    );
    assert!(
        settled,
        "calls left in flight: {agg_stats:?}; {backend_report:?}"
    );
    assert!(samples.len() >= 80, "too few calls: {}", samples.len());
    // The callers' giving up reached the servers: the aggregator counted the abandoned calls
    // as cancelled...
    assert!(
        agg_stats.cancelled as f64 >= 0.5 * gave_up as f64,
        "aggregator cancelled {} of {gave_up} abandoned calls",
        agg_stats.cancelled
    );
    // ...and cancelled the backend calls they had outstanding: two or so per abandoned call
    // (the backends take 100 to 300 ms, the callers leave within 350 ms; 2.6 to 2.8 seen).
    // Were abandoned calls left running, the backends would count only the calls whose
    // grpc-timeout ran out (about 0.8 per abandoned call, seen with the backend calls detached).
    assert!(
        backend_cancelled as f64 >= 1.5 * agg_stats.cancelled as f64,
        "backends cancelled {backend_cancelled} calls for {} cancelled aggregate calls",
        agg_stats.cancelled
    );

    // Every permit and slot is free: LIMIT concurrent calls are all admitted and served.
    let burst: Vec<_> = (0..LIMIT)
        .map(|i| {
            let mut c = client.clone();
            tokio::spawn(async move {
                c.aggregate(AggregateRequest {
                    query: format!("after-{i}"),
                    deadline_ms: Some(1500),
                    ..Default::default()
                })
                .await
            })
        })
        .collect();
    for call in burst {
        let reply = call.await.unwrap().expect("admitted").into_inner();
        let summary = reply.summary.unwrap();
        assert_eq!(summary.ok, 3, "{reply:?}");
    }
}
