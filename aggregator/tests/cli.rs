//! The `aggregator` binary as a user meets it: errors for bad flags, and it starts even when
//! its backends are down.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

fn aggregator() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_aggregator"));
    cmd.env_remove("RUST_LOG");
    cmd
}

#[test]
fn bad_flags_exit_non_zero_naming_the_problem() {
    let b = "--backend=a=http://127.0.0.1:1";
    let cases: [(&[&str], &str); 7] = [
        (&[], "--backend"),
        (&["--backend", "alpha"], "is not NAME=URL"),
        (
            &["--backend", "a=http://x"],
            "`http://x` (backend a) has no port",
        ),
        (&[b, "--backend", "a=http://127.0.0.1:1"], "given twice"),
        (&[b, "--deadline", "0ms"], "out of range"),
        (&[b, "--fanout", "parallel"], "invalid value 'parallel'"),
        (&[b, "--backoff-base", "2s"], "above --backoff-cap"),
    ];
    for (args, want) in cases {
        let out = aggregator().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
    }
}

#[test]
fn backends_from_the_env_and_help_names_the_vars() {
    let out = aggregator().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for want in [
        "[env: AGGREGATOR_BACKENDS=]",
        "[env: AGGREGATOR_DEADLINE=]",
        "BLOCKING the async",
    ] {
        assert!(help.contains(want), "--help lacks {want:?}");
    }
    let out = aggregator()
        .env(
            "AGGREGATOR_BACKENDS",
            "a=http://127.0.0.1:1,a=http://127.0.0.1:1",
        )
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("given twice"));
}

#[test]
fn starts_while_its_backends_are_down() {
    let mut child = aggregator()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "gone=http://127.0.0.1:1",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let serving = lines.any(|l| l.is_ok_and(|l| l.contains("serving")));
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        serving,
        "the aggregator did not start with its backend down"
    );
}
