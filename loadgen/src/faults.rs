//! Faults injected without any protocol code: a byte-level TCP relay in front of a backend
//! server, which a scenario switches from passing bytes to *frozen* (silent, as a process
//! stopped with SIGSTOP) or *killed* (as kill -9), and an address where nothing listens.
//!
//! The relay copies bytes and nothing else, so whatever the aggregator sees is what a real
//! stopped or dead peer would show it: a frozen relay still accepts connections (the kernel
//! of a stopped process completes handshakes too) and never answers, not even an HTTP/2 ping;
//! a killed one resets every connection it relays and closes its port, so reconnecting is
//! refused.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a relay does with the bytes, on every connection, new or old.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Switch {
    /// Copies them both ways, as if it were not there.
    Pass,
    /// Relays nothing either way, but keeps every connection open and accepts new ones.
    Freeze,
    /// Resets every connection and stops listening. For good: a killed process stays dead.
    Kill,
}

/// A relay on a loopback port of its own in front of one server, running on the runtime it
/// was started on. Dropping it kills it.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    switch: watch::Sender<Switch>,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (switch, watching) = watch::channel(Switch::Pass);
        tokio::spawn(accept(listener, upstream, watching));
        Ok(Relay { addr, switch })
    }

    /// Where to connect instead of the server: `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches the relay; nothing brings a killed one back.
    pub fn set(&self, to: Switch) {
        self.switch.send_if_modified(|now| {
            let changed = *now != Switch::Kill && *now != to;
            if changed {
                *now = to;
            }
            changed
        });
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.set(Switch::Kill);
    }
}

/// An `http://` URL on a loopback port nothing listens on: connections to it are refused, as
/// at a host whose server is down. (The port was free a moment ago; another program taking it
/// meanwhile is possible, and unlikely.)
pub fn refusing_url() -> std::io::Result<String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}"))
}

/// Accepts connections until killed, whatever else the switch says; then drops the listener,
/// so new connections are refused.
async fn accept(listener: TcpListener, upstream: SocketAddr, switch: watch::Receiver<Switch>) {
    let mut killed = switch.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                if let Ok((client, _)) = accepted {
                    tokio::spawn(relay(client, upstream, switch.clone()));
                }
            }
            () = until(&mut killed, |s| s == Switch::Kill) => return,
        }
    }
}

/// One connection: a connection of its own to `upstream`, bytes copied both ways while the
/// switch says so, until both sides have closed or the relay is killed.
async fn relay(mut client: TcpStream, upstream: SocketAddr, mut switch: watch::Receiver<Switch>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    // Without these, Nagle's algorithm would hold back small HTTP/2 frames for an ACK, and the
    // relay would add latency a real network on loopback does not have.
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let (from_client, to_client) = client.split();
        let (from_server, to_server) = server.split();
        let both = futures::future::join(
            pump(from_client, to_server, switch.clone()),
            pump(from_server, to_client, switch.clone()),
        );
        // The pumps stop at a kill too: which of the two ends first does not matter.
        tokio::select! {
            _ = both => {}
            () = until(&mut switch, |s| s == Switch::Kill) => {}
        }
    }
    if *switch.borrow() == Switch::Kill {
        reset(&client);
    }
}

/// Closes `stream` with a reset (RST) rather than an orderly FIN once dropped, as the kernel
/// does for the connections of a process killed with data unread.
#[allow(deprecated)]
fn reset(stream: &TcpStream) {
    // Deprecated because a non-zero linger blocks the thread on close; a zero one never does:
    // the close discards what is unsent and sends RST at once.
    let _ = stream.set_linger(Some(Duration::ZERO));
}

/// Copies bytes from `from` to `to` while the switch passes them; holds them (reads and
/// writes nothing) while it is frozen. At the end of `from`, shuts `to` for writing, as the
/// peer did. Returns when either side is gone or the relay is killed.
async fn pump(mut from: ReadHalf<'_>, mut to: WriteHalf<'_>, mut switch: watch::Receiver<Switch>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        if !flowing(&mut switch).await {
            return;
        }
        // A freeze while waiting for bytes stops the read (reading is cancel-safe: nothing is
        // lost), so no byte read after the freeze is relayed.
        let n = tokio::select! {
            read = from.read(&mut buffer) => match read {
                Ok(0) | Err(_) => {
                    let _ = to.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
            () = until(&mut switch, |s| s != Switch::Pass) => continue,
        };
        // Written piece by piece for the same reason: a freeze mid-write holds the rest.
        let mut sent = 0;
        while sent < n {
            if !flowing(&mut switch).await {
                return;
            }
            tokio::select! {
                written = to.write(&buffer[sent..n]) => match written {
                    Ok(0) | Err(_) => return,
                    Ok(k) => sent += k,
                },
                () = until(&mut switch, |s| s != Switch::Pass) => {}
            }
        }
    }
}

/// Waits until the switch satisfies `condition` (or is gone). The switch's value is read and
/// let go at once: holding it would hold a lock across the caller's next await.
async fn until(switch: &mut watch::Receiver<Switch>, condition: impl Fn(Switch) -> bool) {
    let _ = switch.wait_for(|s| condition(*s)).await.map(|now| *now);
}

/// Waits while the relay is frozen: true when it passes bytes again, false once it is killed
/// (or gone).
async fn flowing(switch: &mut watch::Receiver<Switch>) -> bool {
    let now = switch
        .wait_for(|s| *s != Switch::Freeze)
        .await
        .map(|now| *now);
    matches!(now, Ok(Switch::Pass))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    /// An echo server on loopback.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn round_trip(s: &mut TcpStream, within: Duration) -> Option<[u8; 4]> {
        s.write_all(b"ping").await.ok()?;
        let mut got = [0u8; 4];
        timeout(within, s.read_exact(&mut got)).await.ok()?.ok()?;
        Some(got)
    }

    fn addr_of(relay: &Relay) -> SocketAddr {
        relay.addr
    }

    #[tokio::test]
    async fn passes_then_freezes_then_passes_again() {
        let relay = Relay::start(echo().await).await.unwrap();
        let mut old = TcpStream::connect(addr_of(&relay)).await.unwrap();
        let second = Duration::from_secs(1);
        assert_eq!(round_trip(&mut old, second).await, Some(*b"ping"));
        relay.set(Switch::Freeze);
        // Silent on the old connection, and a new one is accepted but silent too.
        assert_eq!(round_trip(&mut old, Duration::from_millis(200)).await, None);
        let mut new = TcpStream::connect(addr_of(&relay)).await.unwrap();
        assert_eq!(round_trip(&mut new, Duration::from_millis(200)).await, None);
        // Thawed: what was held arrives.
        relay.set(Switch::Pass);
        let mut held = [0u8; 4];
        timeout(second, old.read_exact(&mut held))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&held, b"ping");
        assert_eq!(round_trip(&mut new, second).await, Some(*b"ping"));
    }

    #[tokio::test]
    async fn a_kill_resets_connections_and_refuses_new_ones() {
        let relay = Relay::start(echo().await).await.unwrap();
        let addr = addr_of(&relay);
        let mut old = TcpStream::connect(addr).await.unwrap();
        assert!(round_trip(&mut old, Duration::from_secs(1)).await.is_some());
        relay.set(Switch::Kill);
        let mut byte = [0u8; 1];
        let read = timeout(Duration::from_secs(1), old.read(&mut byte))
            .await
            .unwrap();
        let err = read.expect_err("a reset, not an orderly close");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
        // The listener closes just after the switch: allow it a moment.
        let mut refused = false;
        for _ in 0..50 {
            if TcpStream::connect(addr).await.is_err() {
                refused = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(refused, "{addr} still accepts connections");
        // Nothing revives it.
        relay.set(Switch::Pass);
        assert!(TcpStream::connect(addr).await.is_err());
    }

    #[tokio::test]
    async fn nothing_listens_at_a_refusing_url() {
        let url = refusing_url().unwrap();
        let addr: SocketAddr = url.trim_start_matches("http://").parse().unwrap();
        assert!(TcpStream::connect(addr).await.is_err());
    }
}
