//! The runtime-lag monitor: tokio's version of `asyncio.run(debug=True)` warning when the loop
//! was blocked for more than 100 ms.
//!
//! A plain OS thread (not a task: a task would be stalled along with what it watches) hands the
//! runtime a tiny probe task every [`PROBE_INTERVAL`] and measures how long the runtime takes to
//! poll it. When every async worker is stuck in blocking code, the probe waits; past the
//! threshold that is a stall, logged as a warning and counted in `Stats`. A runtime with one free
//! worker still polls the probe promptly, so the monitor reports stalls of the *runtime*, not of
//! one thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::counters::Counters;

/// How often the monitor probes the runtime.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(20);

/// Stalls longer than this are reported (asyncio's `slow_callback_duration` is 100 ms too).
pub const STALL_THRESHOLD: Duration = Duration::from_millis(100);

/// A running monitor; dropping it stops the thread.
#[derive(Debug)]
pub struct LagMonitor {
    stop: Arc<AtomicBool>,
}

impl LagMonitor {
    /// Starts watching `runtime`; stalls go to `counters` and to the log.
    pub fn start(
        runtime: tokio::runtime::Handle,
        counters: Arc<Counters>,
    ) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        thread::Builder::new()
            .name("lag-monitor".into())
            .spawn(move || watch(&runtime, &counters, &stopped))?;
        Ok(Self { stop })
    }
}

impl Drop for LagMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn watch(runtime: &tokio::runtime::Handle, counters: &Counters, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        thread::sleep(PROBE_INTERVAL);
        let (tx, rx) = mpsc::sync_channel::<()>(1);
        let sent = Instant::now();
        runtime.spawn(async move {
            let _ = tx.send(());
        });
        // Wait for the probe to run, waking now and then to notice a stop request.
        loop {
            match rx.recv_timeout(STALL_THRESHOLD) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => {}
                // Stopped, or the runtime shut down and dropped the probe.
                Err(_) => return,
            }
        }
        let lag = sent.elapsed();
        if lag > STALL_THRESHOLD {
            let ms = lag.as_millis() as u64;
            counters.record_stall(ms);
            tracing::warn!(
                stall_ms = ms,
                "async runtime workers were stalled for {ms} ms: blocking code is running on them"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_a_blocked_runtime() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let counters = Arc::new(Counters::default());
        let _monitor = LagMonitor::start(rt.handle().clone(), counters.clone()).unwrap();
        // An idle runtime answers probes at once.
        thread::sleep(Duration::from_millis(150));
        assert_eq!(counters.snapshot("t").runtime_stalls, 0);
        // Block the only worker for 400 ms, the mistake the monitor exists to catch.
        rt.block_on(async {
            tokio::spawn(async { thread::sleep(Duration::from_millis(400)) })
                .await
                .unwrap();
        });
        thread::sleep(Duration::from_millis(100));
        let s = counters.snapshot("t");
        assert!(s.runtime_stalls >= 1, "{s:?}");
        assert!(s.longest_stall_ms >= 200, "{s:?}");
    }
}
