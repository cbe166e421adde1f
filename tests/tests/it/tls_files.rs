//! The servers' own TLS files, as an operator meets them: a bad file stops the binary at
//! start-up with a message naming the flag, the file and the problem; SIGHUP re-reads the files
//! (and does not kill the process, as it would by default).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fanout_tests::eventually;
use fanout_tests::load::backend_process;
use fanout_tests::pki::Pki;
use fanout_tests::process::binary;

/// Runs `bin` with `args` (which must fail before serving) and returns its stderr.
fn start_up_error(bin: &str, args: &[&str]) -> String {
    let out = Command::new(binary(bin))
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{bin} {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_bad_file_stops_a_server_at_start_up_naming_the_file_and_the_problem() {
    let pki = Pki::new("fanout test CA");
    let (cert, key) = pki.issue(&["localhost"]);
    let (_, other_key) = pki.issue(&["localhost"]);
    let expired = pki
        .dir
        .write("expired.pem", &pki.ca.expired_leaf(&["localhost"]).cert_pem);
    let junk = pki.dir.write("junk.pem", "not a certificate\n");
    let missing = pki.dir.path("missing.pem");
    let listen = ["--listen", "127.0.0.1:0"];
    let backend = |cert: &Path, key: &Path| {
        let mut args = listen.to_vec();
        args.extend(["--tls-cert", s(cert), "--tls-key", s(key)]);
        start_up_error("backend", &args)
    };
    for (err, want) in [
        (
            backend(&missing, &key),
            format!("--tls-cert {}: no such file", s(&missing)),
        ),
        (
            backend(&junk, &key),
            format!("--tls-cert {}: not a PEM file", s(&junk)),
        ),
        (
            backend(&cert, &cert),
            format!("--tls-key {}: holds no private key", s(&cert)),
        ),
        (
            backend(&cert, &other_key),
            format!(
                "--tls-key {}: this private key does not match the certificate in {}",
                s(&other_key),
                s(&cert)
            ),
        ),
        (
            backend(&expired, &key),
            format!("--tls-cert {}: certificate #1", s(&expired)),
        ),
    ] {
        println!("{}", err.trim());
        assert!(err.contains(&want), "want `{want}` in: {err}");
    }

    // The aggregator's client files are checked at start-up too.
    let err = start_up_error(
        "aggregator",
        &[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "a=https://127.0.0.1:1",
            "--tls-ca",
            s(&junk),
        ],
    );
    println!("{}", err.trim());
    assert!(
        err.contains(&format!("--tls-ca {}: not a PEM file", s(&junk))),
        "{err}"
    );
    let err = start_up_error(
        "aggregator",
        &[
            "--listen",
            "127.0.0.1:0",
            "--backend",
            "a=https://127.0.0.1:1",
            "--tls-client-cert",
            s(&cert),
        ],
    );
    assert!(err.contains("--tls-client-key"), "{err}");
}

#[tokio::test]
async fn sighup_re_reads_the_certificate_and_the_server_lives_on() {
    let pki = Pki::new("fanout test CA");
    let files = pki.server(&["localhost"], false);
    let (cert, key) = (s(&files.cert).to_owned(), s(&files.key).to_owned());
    let server = tokio::task::spawn_blocking(move || {
        backend_process(
            "tls",
            "127.0.0.1:0",
            &["--tls-cert", &cert, "--tls-key", &key],
        )
    })
    .await
    .unwrap();
    assert_eq!(
        server.log_lines(r#"tls="on""#).len(),
        1,
        "{:?}",
        server.log_lines("serving")
    );

    let (new_cert, new_key) = pki.issue(&["localhost"]);
    std::fs::rename(&new_cert, &files.cert).unwrap();
    std::fs::rename(&new_key, &files.key).unwrap();
    server.signal("HUP");
    let reloaded = eventually(Duration::from_secs(5), || async {
        !server.log_lines("SIGHUP: re-reading").is_empty()
            && !server.log_lines("TLS certificate reloaded").is_empty()
    })
    .await;
    assert!(
        reloaded,
        "no reload logged: {:?}",
        server.log.lock().unwrap()
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut server = server;
    assert!(
        server.wait_exit(Duration::from_millis(10)).is_none(),
        "SIGHUP killed the server"
    );
}
