//! TLS on every hop: a client calls the aggregator over TLS, the aggregator its backends over
//! TLS, each side proving who it is with certificates (mTLS). A client without a certificate is
//! turned away by an mTLS server; a backend whose certificate does not pass (another host's, an
//! unknown CA's) is that backend's failure, not the call's; a certificate rotated while calls
//! run reaches new connections and drops no open one.

use std::time::Duration;

use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_proto::v1::backend_client::BackendClient;
use fanout_tests::pki::{Names, Pki, channel};
use fanout_tests::*;
use fanout_tls::ClientTls;
use fanout_tls::tokio_rustls::rustls::pki_types::CertificateDer;
use fanout_tls::tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio::net::TcpStream;

/// A backend serving TLS with `files`.
fn tls_backend(
    name: &str,
    files: fanout_tls::ServerTlsFiles,
) -> fanout_server::thread::ServerThread {
    start_backend(
        BackendConfig {
            tls: Some(files),
            ..backend_config(name, "5ms")
        },
        1,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_mtls_round_trips_through_the_aggregator() {
    let pki = Pki::new("fanout test CA");
    // alpha is called by name (its certificate names alpha.test, which the aggregator checks
    // and sends as SNI); beta by address (its certificate names 127.0.0.1).
    let alpha = tls_backend("alpha", pki.server(&["alpha.test"], true));
    let beta = tls_backend("beta", pki.server(&["127.0.0.1"], true));
    let names = Names(vec![("alpha.test".into(), alpha.addr())]);
    let specs = vec![
        format!("alpha=https://alpha.test:{}", alpha.addr().port())
            .parse()
            .unwrap(),
        format!("beta=https://{}", beta.addr()).parse().unwrap(),
    ];
    let agg = start_aggregator(
        AggregatorConfig {
            tls: Some(pki.server(&["localhost"], true)),
            backend_tls: pki.client(true),
            resolver: names.resolver(),
            ..aggregator_config(specs)
        },
        2,
    );

    let channel = channel(agg.addr(), "localhost", &pki.client(true))
        .await
        .expect("a TLS connection to the aggregator");
    let reply = AggregatorClient::new(channel)
        .aggregate(aggregate("over TLS"))
        .await
        .expect("the call succeeds")
        .into_inner();
    for r in &reply.results {
        assert_eq!(outcome_code(r), "OK", "{reply:?}");
    }
    assert_eq!(reply.results.len(), 2, "{reply:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_server_refuses_a_client_without_a_certificate() {
    let pki = Pki::new("fanout test CA");
    let backend = tls_backend("alpha", pki.server(&["localhost"], true));

    // No client certificate: the handshake is refused. In TLS 1.3 the client's side of the
    // handshake is over before the server has checked its certificate, so the client learns
    // of the refusal on its first read, as the server's alert or as a closed connection.
    for attempt in 0..3 {
        let refused = match channel(backend.addr(), "localhost", &pki.client(false)).await {
            Err(e) => format!("{e:?}"),
            Ok(ch) => match BackendClient::new(ch).fetch(fetch("no cert")).await {
                Ok(_) => panic!("a client without a certificate was served"),
                Err(status) => format!("{status:?}"),
            },
        };
        println!("refused ({attempt}): {refused}");
    }

    // Plaintext to a TLS server: no call either.
    let plain = BackendClient::connect(backend.url()).await;
    if let Ok(mut c) = plain {
        assert!(c.fetch(fetch("plaintext")).await.is_err());
    }

    // A client with a certificate is served all along.
    let ch = channel(backend.addr(), "localhost", &pki.client(true))
        .await
        .unwrap();
    BackendClient::new(ch)
        .fetch(fetch("with a cert"))
        .await
        .expect("served");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_certificate_does_not_pass_is_that_backends_failure() {
    let pki = Pki::new("fanout test CA");
    let stranger = Pki::new("someone else's CA");
    let good = tls_backend("good", pki.server(&["127.0.0.1"], false));
    // A certificate from our CA, but for another host.
    let wrong_host = tls_backend("wrong-host", pki.server(&["elsewhere.test"], false));
    // A certificate for the right address, from a CA we do not trust.
    let unknown_ca = tls_backend("unknown-ca", stranger.server(&["127.0.0.1"], false));
    let specs = [
        ("good", &good),
        ("wrong-host", &wrong_host),
        ("unknown-ca", &unknown_ca),
    ]
    .iter()
    .map(|(n, b)| format!("{n}=https://{}", b.addr()).parse().unwrap())
    .collect();
    let agg = start_aggregator(
        AggregatorConfig {
            backend_tls: pki.client(false),
            ..aggregator_config(specs)
        },
        2,
    );
    let reply = aggregator_client(&agg)
        .await
        .aggregate(aggregate("whose certificate?"))
        .await
        .expect("the call as a whole succeeds")
        .into_inner();
    let failure = |name: &str| {
        let r = reply.results.iter().find(|r| r.backend == name).unwrap();
        use fanout_proto::v1::backend_result::Outcome;
        match &r.outcome {
            Some(Outcome::Failure(f)) => (f.code_name.clone(), f.message.clone()),
            other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(
        outcome_code(reply.results.iter().find(|r| r.backend == "good").unwrap()),
        "OK",
        "{reply:?}"
    );
    let (code, message) = failure("wrong-host");
    println!("wrong-host: {code}: {message}");
    assert_eq!(code, "UNAVAILABLE");
    assert!(
        message.contains("backend wrong-host") && message.contains("not valid for name"),
        "{message}"
    );
    let (code, message) = failure("unknown-ca");
    println!("unknown-ca: {code}: {message}");
    assert_eq!(code, "UNAVAILABLE");
    assert!(message.contains("UnknownIssuer"), "{message}");
}

/// The DER of the certificate a new TLS connection to `addr` is shown.
async fn served_certificate(
    addr: std::net::SocketAddr,
    client: &fanout_tls::ClientTlsFiles,
) -> Vec<u8> {
    let connector = ClientTls::load(client).unwrap().connector().unwrap();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = fanout_tls::client::server_name("localhost").unwrap();
    let stream = connector.connect(name, tcp).await.expect("handshake");
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_while_calls_run_reaches_new_connections_only() {
    let pki = Pki::new("fanout test CA");
    let files = pki.server(&["localhost"], false);
    let first = std::fs::read(&files.cert).unwrap();
    let backend = tls_backend("alpha", files.clone());
    let client = pki.client(false);

    // A raw HTTP/2 connection opened before the rotation and left idle (h2 never reconnects,
    // so a call on it later shows whether the server kept it)...
    let connector = ClientTls::load(&client).unwrap().connector().unwrap();
    let idle = raw::connect_tls(backend.addr(), &connector, "localhost").await;
    let first_call = raw::call(
        &idle.send,
        raw::grpc_head("/fanout.v1.Backend/Fetch"),
        raw::encoded(&fetch("before")),
    )
    .await;
    assert_eq!(first_call.code(), Some(0), "{first_call:?}");
    // ...and a tonic connection calling all through the rotation.
    let ch = channel(backend.addr(), "localhost", &client).await.unwrap();
    let mut before = BackendClient::new(ch);
    before.fetch(fetch("warm")).await.unwrap();
    let caller = {
        let mut c = before.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let until = tokio::time::Instant::now() + Duration::from_secs(4);
            while tokio::time::Instant::now() < until {
                match c.fetch(fetch("during the rotation")).await {
                    Ok(_) => ok += 1,
                    Err(s) => failed.push(s.to_string()),
                }
            }
            (ok, failed)
        })
    };

    // Rotate: a new certificate and key replace the files (each moved into place at once).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (new_cert, new_key) = pki.issue(&["localhost"]);
    std::fs::rename(&new_cert, &files.cert).unwrap();
    std::fs::rename(&new_key, &files.key).unwrap();
    let second = std::fs::read(&files.cert).unwrap();
    let der = |pem: &[u8]| CertificateDer::from_pem_slice(pem).unwrap().to_vec();
    assert_ne!(der(&first), der(&second));

    // New connections get the new certificate once the server has looked at its files again.
    let rotated = eventually(Duration::from_secs(8), || async {
        served_certificate(backend.addr(), &client).await == der(&second)
    })
    .await;
    assert!(rotated, "new connections still get the old certificate");

    // No call through the rotation failed, and the connection opened before it still serves.
    let (ok, failed) = caller.await.unwrap();
    println!("{ok} calls during the rotation, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "calls failed during the rotation: {failed:?}"
    );
    assert!(ok > 10, "too few calls during the rotation: {ok}");
    let after = raw::call(
        &idle.send,
        raw::grpc_head("/fanout.v1.Backend/Fetch"),
        raw::encoded(&fetch("on the connection opened before")),
    )
    .await;
    assert_eq!(after.code(), Some(0), "{after:?}");
}

/// An ejected `https://` replica is health-probed over TLS, with the aggregator's client
/// certificate: restarted at the same address, it takes calls again long before its 30 s
/// ejection ends (a probe in plaintext, or without the certificate, would never see it serve).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ejected_tls_replica_is_probed_over_tls_and_returns() {
    let pki = Pki::new("fanout test CA");
    let files = pki.server(&["127.0.0.1"], true);
    let steady = tls_backend("b", files.clone());
    let victim = tls_backend("b", files.clone());
    let victim_addr = victim.addr();
    let specs = [&steady, &victim]
        .iter()
        .map(|s| format!("b=https://{}", s.addr()).parse().unwrap())
        .collect();
    let agg = start_aggregator(
        AggregatorConfig {
            backend_tls: pki.client(true),
            replicas: aggregator::ReplicaPolicy {
                eject_after: 2,
                eject_time: Duration::from_secs(30),
                ..aggregator::ReplicaPolicy::default()
            },
            ..aggregator_config(specs)
        },
        2,
    );
    let client = aggregator_client(&agg).await;
    let call = |mut c: AggregatorClient<tonic::transport::Channel>| async move {
        let reply = c.aggregate(aggregate("q")).await.unwrap().into_inner();
        assert_eq!(outcome_code(&reply.results[0]), "OK", "{reply:?}");
    };
    for _ in 0..8 {
        call(client.clone()).await;
    }
    tokio::task::spawn_blocking(move || victim.stop())
        .await
        .unwrap();
    for _ in 0..20 {
        call(client.clone()).await;
    }
    let restarted = backend::spawn(
        BackendConfig {
            tls: Some(files),
            ..backend_config("b", "5ms")
        },
        1,
        victim_addr,
    )
    .expect("restart");
    let back = std::time::Instant::now();
    let ch = channel(restarted.addr(), "127.0.0.1", &pki.client(true))
        .await
        .unwrap();
    let served_again = eventually(Duration::from_secs(8), || {
        let (client, mut stats) = (client.clone(), BackendClient::new(ch.clone()));
        async move {
            for _ in 0..4 {
                call(client.clone()).await;
            }
            backend_stats(&mut stats).await.served > 0
        }
    })
    .await;
    println!(
        "the restarted TLS replica served again after {:?}",
        back.elapsed()
    );
    assert!(
        served_again,
        "the restarted TLS replica got no call within 8 s"
    );
}
