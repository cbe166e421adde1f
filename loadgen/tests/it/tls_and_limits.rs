//! The loadgen against servers that speak TLS and hold connections to their limits: a run over
//! mTLS, and connections that outlast a wait for --start-at longer than the server's
//! first-request timeout.

use std::process::Command;
use std::time::{Duration, SystemTime};

use fanout_server::ConnLimits;
use fanout_tls::ServerTlsFiles;
use fanout_tls::testing::{Dir, Issued};

fn loadgen() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_loadgen"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// The report of a finished run (both outputs shown when it failed).
fn report(out: &std::process::Output, path: &std::path::Path) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_run_over_mtls() {
    let dir = Dir::new();
    let ca = Issued::ca("loadgen test CA");
    let (server, client) = (ca.leaf(&["localhost"]), ca.leaf(&["loadgen.test"]));
    let ca_file = dir.write("ca.pem", &ca.cert_pem);
    let backend = backend::spawn(
        backend::Config {
            latency: backend::latency::LatencySpec::Fixed(Duration::from_millis(1)),
            tls: Some(ServerTlsFiles {
                cert: dir.write("server.pem", &server.cert_pem),
                key: dir.write("server-key.pem", &server.key_pem),
                client_ca: Some(ca_file.clone()),
            }),
            ..backend::Config::default()
        },
        1,
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let json = dir.path("run.json");
    let target = format!("https://localhost:{}", backend.addr().port());
    let out = loadgen()
        .args(["run", "--rpc", "fetch", "--target", &target])
        .args(["-c", "4", "-d", "1s", "--warmup", "0s"])
        .arg("--tls-ca")
        .arg(&ca_file)
        .arg("--tls-client-cert")
        .arg(dir.write("client.pem", &client.cert_pem))
        .arg("--tls-client-key")
        .arg(dir.write("client-key.pem", &client.key_pem))
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let r = report(&out, &json);
    assert!(r["calls"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");

    // Without the client certificate: a clear error naming the target, not a hang.
    let out = loadgen()
        .args(["run", "--rpc", "fetch", "--target", &target, "-d", "1s"])
        .arg("--tls-ca")
        .arg(&ca_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stderr}");
    assert!(stderr.contains(&target), "{stderr}");
}

#[test]
fn connections_outlast_a_start_at_wait_past_the_first_request_timeout() {
    let backend = backend::spawn(
        backend::Config {
            latency: backend::latency::LatencySpec::Fixed(Duration::from_millis(1)),
            limits: ConnLimits {
                first_request_timeout: Duration::from_millis(500),
                ..ConnLimits::default()
            },
            ..backend::Config::default()
        },
        1,
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let dir = Dir::new();
    let json = dir.path("run.json");
    let start_at = humantime::format_rfc3339_seconds(SystemTime::now() + Duration::from_secs(3));
    let out = loadgen()
        .args(["run", "--rpc", "fetch", "--target", &backend.url()])
        .args([
            "-c",
            "8",
            "--connections",
            "4",
            "-d",
            "1s",
            "--warmup",
            "0s",
        ])
        .args(["--start-at", &start_at.to_string()])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let r = report(&out, &json);
    assert!(r["calls"].as_u64().unwrap() > 10, "{r}");
    assert_eq!(r["errors"].as_u64(), Some(0), "{r}");
}
