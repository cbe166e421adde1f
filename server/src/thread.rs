//! Start a server on a tokio runtime of its own, on its own OS thread.
//!
//! The worker count is part of what fanout measures (a blocking handler stalls *its* runtime),
//! so a server started by a test or by the loadgen's local deployment must not share the
//! caller's runtime. [`ServerThread`] binds the port first (so the address is known at once and
//! port 0 works), runs the server on a fresh runtime with the given worker count, and on drop
//! asks it to shut down.
//!
//! Dropping does not wait: a graceful drain waits for clients to close their connections, and a
//! client on a single-threaded runtime that is blocked waiting for the drop never would, so the
//! drain would always run to its grace period. [`ServerThread::stop`] waits, for callers that
//! need the server gone (its port free, its drain observed).

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A server running on its own runtime and thread; dropping it starts the server's shutdown.
#[derive(Debug)]
pub struct ServerThread {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<()>>,
}

/// Builds a multi-threaded runtime with `workers` worker threads (0 = one per core).
pub fn runtime(workers: usize, name: &str) -> std::io::Result<tokio::runtime::Runtime> {
    let mut b = tokio::runtime::Builder::new_multi_thread();
    if workers > 0 {
        b.worker_threads(workers);
    }
    b.thread_name(name).enable_all().build()
}

impl ServerThread {
    /// Binds `bind` (e.g. `127.0.0.1:0`) and runs `serve(listener, shutdown)` on a runtime with
    /// `workers` threads. `serve` gets a future that resolves when the handle is dropped or
    /// [`ServerThread::stop`] is called.
    pub fn start<F, Fut, E>(
        name: &str,
        workers: usize,
        bind: SocketAddr,
        serve: F,
    ) -> std::io::Result<Self>
    where
        F: FnOnce(TcpListener, oneshot::Receiver<()>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let std_listener = std::net::TcpListener::bind(bind)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let rt = runtime(workers, name)?;
        let (stop, stopped) = oneshot::channel();
        let label = name.to_owned();
        let join = std::thread::Builder::new()
            .name(format!("{name}-main"))
            .spawn(move || {
                rt.block_on(async move {
                    let listener = match TcpListener::from_std(std_listener) {
                        Ok(l) => l,
                        Err(e) => return tracing::error!(server = label, "cannot listen: {e}"),
                    };
                    if let Err(e) = serve(listener, stopped).await {
                        tracing::error!(server = label, "server stopped with an error: {e}");
                    }
                });
                // Don't wait for blocking-pool work (a `spawn-blocking` sleep) to finish.
                rt.shutdown_background();
            })?;
        Ok(Self {
            addr,
            stop: Some(stop),
            join: Some(join),
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for a tonic client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shuts the server down and waits until it has stopped (drain included). Blocks the
    /// calling thread: from async code, call it where clients can still make progress (a
    /// multi-threaded runtime, or `spawn_blocking`).
    pub fn stop(mut self) {
        self.signal_stop();
        if let Some(join) = self.join.take() {
            let _ = join.join();
        }
    }

    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        self.signal_stop();
    }
}
