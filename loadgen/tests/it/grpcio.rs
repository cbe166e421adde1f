//! The loadgen against gRPC's C core (grpcio, from PyPI) as a client of it should behave: the
//! streams a server at its SETTINGS_MAX_CONCURRENT_STREAMS refuses (REFUSED_STREAM) are sent
//! again, as gRPC clients do, not counted as errors; a server ending connections at its maximum
//! age (GOAWAY) costs no call, the loadgen connecting again; a server's keepalive pings are
//! answered and its policy on the client's pings never tripped; a server going away ends the
//! run's calls over it as UNAVAILABLE, on time.
//!
//! The server is tests/py/grpcio_backend.py, run by a Python of the tests' own: a virtual
//! environment under `target/`, made the first time, so `cargo test` needs nothing installed
//! but `python3`.

use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fanout_tls::testing::Dir;
use serde_json::Value;

/// The grpcio the tests run (a current release).
const GRPCIO: &str = "grpcio==1.85.3";

/// A Python with `grpc` (a virtual environment of the tests' own under `target/`).
fn python() -> &'static str {
    static PYTHON: OnceLock<String> = OnceLock::new();
    PYTHON.get_or_init(|| fanout_tests::local::python("python-grpcio", "grpc", GRPCIO))
}

/// tests/py/grpcio_backend.py, running; killed when dropped.
struct Grpcio {
    child: Child,
    port: u16,
    /// Closing it stops a server started without --goaway-after.
    _stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Grpcio {
    fn start(args: &[&str]) -> Grpcio {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/py/grpcio_backend.py");
        let mut child = Command::new(python())
            .arg(script)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let port = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the server's port, not {line:?}"));
        Grpcio {
            child,
            port,
            _stdin: stdin,
            stdout,
        }
    }

    fn target(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The server's next line.
    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }
}

impl Drop for Grpcio {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `loadgen run --rpc fetch` against `target` over one connection, `callers` callers for
/// `duration`, all of it measured (no warm-up); its report, and how long it took. Each test
/// takes `harness::alone` before it starts its server (a server that stops on a timer must not
/// run it down while the test waits for another one's load to end).
fn run(target: &str, callers: &str, duration: &str) -> (Value, Duration) {
    let dir = Dir::new();
    let json = dir.path("run.json");
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .env_remove("RUST_LOG")
        .args(["run", "--rpc", "fetch", "--target", target])
        .args(["--connections", "1", "-c", callers, "-d", duration])
        .args(["--warmup", "0s", "--json"])
        .arg(&json)
        .output()
        .unwrap();
    let took = started.elapsed();
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (report, took)
}

#[test]
fn streams_grpcio_refuses_at_its_limit_are_sent_again_not_counted_as_errors() {
    let _alone = crate::harness::alone();
    // 4 streams at once, each call 2 ms: the loadgen's callers queue for streams, and grpcio,
    // counting a finished stream out only once its call is done with, refuses some streams
    // the loadgen sends as others end.
    let server = Grpcio::start(&["--max-streams", "4", "--sleep-ms", "2"]);
    for callers in ["4", "64"] {
        let (r, _) = run(&server.target(), callers, "2s");
        println!("-c {callers}: {r}");
        assert!(r["calls"].as_u64().unwrap() > 0, "-c {callers}: {r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "-c {callers}: {r}");
    }
}

#[test]
fn a_grpcio_server_going_away_fails_the_calls_after_as_unavailable_on_time() {
    let _alone = crate::harness::alone();
    // Stops 1 s in: GOAWAY, 0.3 s for the calls in flight, then the connection closes.
    let mut server = Grpcio::start(&[
        "--max-streams",
        "4",
        "--sleep-ms",
        "2",
        "--goaway-after",
        "1",
        "--grace",
        "0.3",
    ]);
    let (r, took) = run(&server.target(), "8", "3s");
    println!("{r}");
    assert_eq!(server.line(), "stopped");
    // Connecting again fails once the server is gone: the calls then fail at once, at a
    // client's reconnect pace, and the run ends on time.
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let counts = r["status_counts"].as_object().unwrap();
    let count = |code: &str| counts.get(code).map_or(0, |n| n.as_u64().unwrap());
    assert!(count("OK") > 0, "{r}");
    // The calls sent after the GOAWAY, or above its last stream id: never processed, but this
    // connection can no longer take them.
    assert!(count("UNAVAILABLE") > 0, "{r}");
    // Calls the server had taken when it stopped end as it answers them: grpcio answers those
    // it has not begun with CANCELLED ("Server shutdown"). At most the calls in flight.
    assert!(count("CANCELLED") <= 8, "{r}");
    assert_eq!(
        count("OK") + count("UNAVAILABLE") + count("CANCELLED"),
        r["calls"].as_u64().unwrap(),
        "{r}"
    );
}

#[test]
fn a_server_ending_connections_at_its_maximum_age_costs_no_call() {
    let _alone = crate::harness::alone();
    // grpcio ends each connection (GOAWAY) after about 300 ms, as servers with a maximum
    // connection age do: the loadgen connects again, the old connection finishes its calls,
    // and the calls the GOAWAY left unprocessed are sent on the new one.
    let server = Grpcio::start(&[
        "--max-streams",
        "100",
        "--sleep-ms",
        "2",
        "--max-age-ms",
        "300",
    ]);
    for callers in ["1", "16"] {
        let (r, took) = run(&server.target(), callers, "2s");
        println!("-c {callers}: {r}");
        assert!(r["calls"].as_u64().unwrap() > 100, "-c {callers}: {r}");
        assert_eq!(r["errors"].as_u64(), Some(0), "-c {callers}: {r}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }
}

#[test]
fn a_server_that_pings_its_clients_and_polices_theirs_is_served_throughout() {
    let _alone = crate::harness::alone();
    // grpcio pings the loadgen every 50 ms and drops a connection whose ping is not answered
    // within 500 ms; it tolerates one client ping in five minutes. The loadgen answers its
    // pings (h2 does, while the connection's task runs) and sends none of its own.
    let server = Grpcio::start(&[
        "--max-streams",
        "100",
        "--sleep-ms",
        "2",
        "--keepalive-ms",
        "50",
    ]);
    let (r, _) = run(&server.target(), "8", "2s");
    println!("{r}");
    assert!(r["calls"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
}
