//! `--fail-rate` fails that share of calls with UNAVAILABLE, and `--seed` makes it repeatable.

use fanout_tests::*;
use tonic::Code;

/// The outcome (true = failed) of `n` sequential calls to a fresh seeded backend.
async fn outcomes(fail_rate: f64, seed: u64, n: usize) -> Vec<bool> {
    let config = BackendConfig {
        fail_rate,
        seed: Some(seed),
        ..backend_config("flaky", "0ms")
    };
    let server = start_backend(config, 2);
    let mut client = backend_client(&server).await;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        match client.fetch(fetch("q")).await {
            Ok(_) => out.push(false),
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable);
                assert!(status.message().contains("simulated failure"), "{status:?}");
                out.push(true);
            }
        }
    }
    out
}

#[tokio::test]
async fn a_seeded_fail_rate_fails_that_share_and_repeats_exactly() {
    let first = outcomes(0.3, 7, 300).await;
    let failed = first.iter().filter(|f| **f).count();
    assert!(
        (60..=120).contains(&failed),
        "{failed} of 300 failed at rate 0.3"
    );
    assert_eq!(outcomes(0.3, 7, 300).await, first, "same seed, same run");
    assert_ne!(
        outcomes(0.3, 8, 300).await,
        first,
        "another seed, another run"
    );
}

#[tokio::test]
async fn rates_zero_and_one_are_exact() {
    assert!(outcomes(0.0, 1, 50).await.iter().all(|f| !f));
    assert!(outcomes(1.0, 1, 50).await.iter().all(|f| *f));
}
