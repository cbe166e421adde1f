//! The counters behind the `Stats` RPC: what a server saw since it started.
//!
//! A [`CallGuard`] is held for the life of one call. Calls that complete are `served` (and
//! `failed` if they return an error); a guard dropped before completion means the call's
//! future was dropped: the caller cancelled, hung up, or its deadline passed. That is how the
//! servers count `cancelled` without any cooperation from the handler.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use fanout_proto::v1::ServerStats;

/// Monotonic counters, shared by reference between the service, the lag monitor and `Stats`.
#[derive(Debug, Default)]
pub struct Counters {
    pub in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    pub served: AtomicU64,
    pub failed: AtomicU64,
    pub cancelled: AtomicU64,
    pub runtime_stalls: AtomicU64,
    pub longest_stall_ms: AtomicU64,
}

impl Counters {
    /// Starts counting one call; keep the guard until the call ends. The guard owns a handle
    /// to the counters, so it can travel with a response stream.
    pub fn start_call(self: &Arc<Self>) -> CallGuard {
        let now = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.max_in_flight.fetch_max(now, Relaxed);
        CallGuard {
            counters: self.clone(),
            done: false,
        }
    }

    /// Records a stall of the async workers seen by the lag monitor.
    pub fn record_stall(&self, ms: u64) {
        self.runtime_stalls.fetch_add(1, Relaxed);
        self.longest_stall_ms.fetch_max(ms, Relaxed);
    }

    /// Adds one to a counter; a helper so call sites read as what they count.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// A snapshot for the `Stats` RPC; a server adds the counts of its own.
    pub fn snapshot(&self, name: &str) -> ServerStats {
        ServerStats {
            name: name.to_owned(),
            in_flight: self.in_flight.load(Relaxed),
            max_in_flight: self.max_in_flight.load(Relaxed),
            served: self.served.load(Relaxed),
            failed: self.failed.load(Relaxed),
            cancelled: self.cancelled.load(Relaxed),
            runtime_stalls: self.runtime_stalls.load(Relaxed),
            longest_stall_ms: self.longest_stall_ms.load(Relaxed),
            ..ServerStats::default()
        }
    }
}

/// Held for one call. [`CallGuard::finish`] records how it ended; dropping it unfinished
/// records a cancellation.
#[must_use = "a guard dropped at once counts the call as cancelled"]
#[derive(Debug)]
pub struct CallGuard {
    counters: Arc<Counters>,
    done: bool,
}

impl CallGuard {
    /// The call completed; `ok` says whether it succeeded.
    pub fn finish(mut self, ok: bool) {
        self.done = true;
        Counters::bump(&self.counters.served);
        if !ok {
            Counters::bump(&self.counters.failed);
        }
    }
}

impl Drop for CallGuard {
    fn drop(&mut self) {
        self.counters.in_flight.fetch_sub(1, Relaxed);
        if !self.done {
            Counters::bump(&self.counters.cancelled);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_served_failed_and_cancelled() {
        let c = Arc::new(Counters::default());
        let a = c.start_call();
        let b = c.start_call();
        let d = c.start_call();
        assert_eq!(c.snapshot("x").in_flight, 3);
        a.finish(true);
        b.finish(false);
        drop(d);
        let s = c.snapshot("x");
        assert_eq!(
            (
                s.in_flight,
                s.max_in_flight,
                s.served,
                s.failed,
                s.cancelled
            ),
            (0, 3, 2, 1, 1)
        );
    }
}
