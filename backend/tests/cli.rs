//! The `backend` binary as a user meets it: flags and env vars, errors for bad ones, and a
//! graceful drain on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fanout_proto::v1::FetchRequest;
use fanout_proto::v1::backend_client::BackendClient;

fn backend() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backend"));
    cmd.env_remove("RUST_LOG").env("NO_COLOR", "1");
    cmd
}

#[test]
fn bad_flags_exit_non_zero_naming_the_problem() {
    let cases: [(&[&str], &str); 4] = [
        (&["--latency", "lognormal:p50=20ms"], "invalid latency spec"),
        (&["--fail-rate", "2"], "not a fraction from 0 to 1"),
        (&["--mode", "sleepy"], "invalid value 'sleepy' for '--mode"),
        (&["--listen", "nowhere"], "--listen"),
    ];
    for (args, want) in cases {
        let out = backend().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn bad_env_values_are_refused_too() {
    let out = backend()
        .env("BACKEND_LATENCY", "uniform:9ms..1ms")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("above the high end"));
}

#[test]
fn help_shows_env_vars_and_warns_about_blocking() {
    let out = backend().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "[env: BACKEND_LATENCY=]",
        "[env: BACKEND_MODE=]",
        "ON the async worker",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}:\n{help}");
    }
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = backend().args(["--listen", &addr]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
}

/// Starts the binary on a free port; returns the child and its address.
fn start(args: &[&str]) -> (Child, String) {
    let mut child = backend()
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("backend exited before serving")
            .unwrap();
        if let Some(rest) = line.split("addr=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_calls_then_exits() {
    let (mut child, addr) = start(&["--allow-overrides", "--grace-period", "5s"]);
    let mut client = BackendClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let call = tokio::spawn(async move {
        client
            .fetch(FetchRequest {
                delay_ms: Some(700),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    assert!(kill.unwrap().success());

    let reply = call.await.unwrap().expect("the in-flight call completes");
    assert_eq!(reply.into_inner().delay_ms, 700);
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "exit took {:?}",
        signalled.elapsed()
    );
}
