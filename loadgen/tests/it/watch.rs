//! `loadgen watch` as a user meets it: against a live aggregator under load (a row per backend
//! with its rate, limit and replica shares), against nothing (a clear error naming the URL), and
//! across a scrape that fails once it is running (a line, and it keeps trying).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::harness::{failed, loadgen, succeeded};
use fanout_proto::v1::AggregateRequest;
use fanout_proto::v1::aggregator_client::AggregatorClient;
use fanout_server::thread::ServerThread;
use fanout_tests::local::free_addr;

fn start_backend() -> ServerThread {
    let config = backend::Config {
        latency: backend::latency::LatencySpec::Fixed(Duration::from_millis(2)),
        ..backend::Config::default()
    };
    backend::spawn(config, 1, "127.0.0.1:0".parse().unwrap()).unwrap()
}

/// Backend `a` in two replicas, `b` in one, behind an aggregator serving metrics at the address
/// returned, once that answers.
fn deployment() -> (Vec<ServerThread>, ServerThread, SocketAddr) {
    let backends: Vec<ServerThread> = (0..3).map(|_| start_backend()).collect();
    let spec = |name: &str, b: &ServerThread| aggregator::BackendSpec {
        name: name.into(),
        url: b.url(),
    };
    let metrics = free_addr();
    let config = aggregator::Config {
        metrics_listen: Some(metrics),
        grace_period: Duration::from_secs(1),
        ..aggregator::Config::new(vec![
            spec("a", &backends[0]),
            spec("a", &backends[1]),
            spec("b", &backends[2]),
        ])
    };
    let agg = aggregator::spawn(config, 1, "127.0.0.1:0".parse().unwrap()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(metrics).is_err() {
        assert!(
            Instant::now() < deadline,
            "no metrics listener at {metrics}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (backends, agg, metrics)
}

/// Aggregate calls from four callers until `stop`; how many succeeded.
fn drive(url: String, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let client = AggregatorClient::connect(url).await.unwrap();
        let ok = Arc::new(AtomicU64::new(0));
        let callers: Vec<_> = (0..4)
            .map(|i| {
                let (mut client, stop, ok) = (client.clone(), stop.clone(), ok.clone());
                tokio::spawn(async move {
                    while !stop.load(Relaxed) {
                        let request = AggregateRequest {
                            query: format!("watch {i}"),
                            ..Default::default()
                        };
                        if client.aggregate(request).await.is_ok() {
                            ok.fetch_add(1, Relaxed);
                        }
                    }
                })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        ok.load(Relaxed)
    })
}

/// The row of `backend` in a snapshot's table, split into its cells, the replicas' last.
fn row(snapshot: &str, backend: &str) -> Vec<String> {
    let line = snapshot
        .lines()
        .find(|l| l.split_whitespace().next() == Some(backend))
        .unwrap_or_else(|| panic!("no row for {backend} in:\n{snapshot}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    assert!(words.len() > 10, "{line:?}");
    let mut cells: Vec<String> = words[..10].iter().map(|w| w.to_string()).collect();
    cells.push(words[10..].join(" "));
    cells
}

fn number(cell: &str) -> f64 {
    cell.replace(',', "")
        .parse()
        .unwrap_or_else(|_| panic!("{cell:?} is not a number"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_aggregator_shows_each_backends_rate_limit_and_replica_shares() {
    let (backends, agg, metrics) = deployment();
    let stop = Arc::new(AtomicBool::new(false));
    let load = drive(agg.url(), stop.clone());
    // Some calls before the first scrape, so every interval has some.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start = Instant::now();
    let out = tokio::task::spawn_blocking(move || {
        loadgen()
            .args(["watch", "--target", &format!("http://{metrics}")])
            .args(["--interval", "500ms", "--count", "2"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let took = start.elapsed();
    stop.store(true, Relaxed);
    let calls = load.await.unwrap();
    let stdout = succeeded(&out);
    println!("{stdout}");
    assert!(calls > 20, "only {calls} calls succeeded");
    // Two snapshots, a blank line between (stdout is a pipe: no screen clearing).
    let snapshots: Vec<&str> = stdout.split("\n\n").collect();
    assert_eq!(snapshots.len(), 2, "{stdout:?}");
    assert!(!stdout.contains('\x1b'), "{stdout:?}");
    // The first snapshot one interval after the first scrape, the second one later.
    assert!(
        took >= Duration::from_millis(1000) && took < Duration::from_secs(8),
        "{took:?}"
    );
    for snapshot in snapshots {
        let header = snapshot.lines().next().unwrap();
        let whole = header
            .split("calls ")
            .nth(1)
            .and_then(|r| r.split("/s").next());
        assert!(number(whole.unwrap()) > 0.0, "{header}");
        assert!(
            snapshot
                .lines()
                .nth(1)
                .unwrap()
                .starts_with("backend  calls/s")
        );
        for (backend, replicas) in [("a", 2), ("b", 1)] {
            let cells = row(snapshot, backend);
            let rate = number(&cells[1]);
            assert!(rate > 0.0, "{backend}: {cells:?}");
            assert!(
                cells[3].ends_with("ms") && cells[4].ends_with('s'),
                "{cells:?}"
            );
            let limit = number(&cells[5]);
            assert!(limit >= 1.0, "{backend}: {cells:?}");
            // `127.0.0.1:PORT NN%` per replica, the shares adding up to about 100%.
            let shares: Vec<f64> = cells[10]
                .split(", ")
                .map(|r| {
                    let (addr, share) = r.split_once(' ').unwrap();
                    assert!(addr.starts_with("127.0.0.1:"), "{r}");
                    number(share.trim_end_matches('%'))
                })
                .collect();
            assert_eq!(shares.len(), replicas, "{backend}: {cells:?}");
            let total: f64 = shares.iter().sum();
            assert!((98.0..=102.0).contains(&total), "{backend}: {cells:?}");
        }
    }
    agg.stop();
    for b in backends {
        b.stop();
    }
}

#[test]
fn an_unreachable_target_exits_non_zero_naming_the_url() {
    let free = free_addr();
    let start = Instant::now();
    let out = loadgen()
        .args(["watch", "--target", &free.to_string(), "--count", "1"])
        .output()
        .unwrap();
    let stderr = failed(&out);
    let url = format!("http://{free}/metrics");
    assert!(
        stderr.contains(&url) && stderr.contains("cannot scrape"),
        "{stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn a_scrape_failing_later_is_a_line_and_watching_goes_on() {
    let (backends, agg, metrics) = deployment();
    let mut child = loadgen()
        .args(["watch", "--target", &format!("http://{metrics}")])
        .args(["--interval", "300ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = stdout.next().unwrap().unwrap();
    assert!(first.contains("calls") && first.contains("shed"), "{first}");
    agg.stop();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = stderr.next().unwrap().unwrap();
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        line.contains(&format!("http://{metrics}/metrics")) && line.contains("trying again"),
        "{line}"
    );
    assert!(still_running, "watch exited after a failed scrape");
    for b in backends {
        b.stop();
    }
}
