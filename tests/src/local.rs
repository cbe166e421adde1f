//! What tests need from this machine besides the servers: a loopback port nobody else will be
//! given, and a Python with a package from PyPI (for peers and parsers nobody here wrote).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::atomic::{AtomicU16, Ordering};

/// A loopback address for a listener that nothing can take before the server binds it: a port
/// that is free now and below Linux's ephemeral range (32768-60999), which neither a `bind` to
/// port 0 nor an outgoing connection is ever given. (A port 0 bind, dropped and passed on, was
/// once handed to another socket of a test running beside the one it was meant for.)
pub fn free_addr() -> SocketAddr {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 10_000) as u16;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 2_000;
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return l.local_addr().unwrap();
        }
    }
}

/// The `python3` of a virtual environment of the tests' own, `target/<venv>`, in which
/// `import <module>` works: made, and `package` (a pip requirement, pinned) installed from PyPI,
/// the first time, so that `cargo test` needs nothing installed but `python3`. Callers keep
/// the answer (in a `OnceLock`): two tests making one environment at once would collide.
pub fn python(venv: &str, module: &str, package: &str) -> String {
    let venv = format!("{}/../target/{venv}", env!("CARGO_MANIFEST_DIR"));
    let python = format!("{venv}/bin/python3");
    let imports = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !imports {
        let made = Command::new("python3").args(["-m", "venv", &venv]).status();
        assert!(
            made.is_ok_and(|s| s.success()),
            "python3 -m venv {venv} failed"
        );
        let pip = Command::new(&python)
            .args(["-m", "pip", "install", "-q", package])
            .status();
        assert!(
            pip.is_ok_and(|s| s.success()),
            "cannot install {package} from PyPI into {venv}"
        );
    }
    python
}
