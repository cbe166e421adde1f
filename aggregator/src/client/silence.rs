//! An endpoint that has stopped answering (a stopped process, a long pause, a host gone quiet
//! with its connection still open) gets one call at a time until it answers again.
//!
//! Why: every call given up on (its attempt timed out, its caller left) is cancelled with an
//! HTTP/2 RST_STREAM, and a stopped server reads none of it until it resumes; then it finds, all
//! at once in its socket buffer, every call opened and cancelled meanwhile. That is what the
//! rapid-reset attack looks like, and a server guarding against it (h2 closes the connection
//! with GOAWAY `ENHANCE_YOUR_CALM` past its limit of such streams) fails every call on the
//! connection. A server can allow for the calls a client had open when it stalled (see
//! `fanout_server::limits`), but not for every call opened and cancelled during a stall of any
//! length: that number grows with the stall and shrinks with the attempt timeout. With this,
//! it is at most the calls in flight when the stall began, plus one probe per attempt timeout.
//! (`tests/tests/stall_cancellation.rs`: a 3 s stall, 32 callers, 50 ms attempts; without this
//! the backend answered with GOAWAY even when allowing 1024 such streams.)
//!
//! The calls that wait for the probe wait within their own attempt timeout and deadline, so a
//! silent endpoint costs a call what it cost before (its timeout, DEADLINE_EXCEEDED), without
//! the extra stream. Any answer, even an error status, ends the silence; a refused connection
//! neither starts nor ends it (outlier ejection deals with those).

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Calls timed out in a row at an endpoint, without an answer in between, that make it silent.
/// (A call its caller abandoned early says nothing about the endpoint and is not counted.)
pub const SILENT_AFTER: u32 = 4;

/// One endpoint's silence; see the module docs.
#[derive(Debug)]
pub struct Silence {
    /// Calls timed out since the last answer.
    unanswered: AtomicU32,
    /// While silent, the one call that may go to the endpoint.
    probe: Arc<Semaphore>,
    /// Wakes the calls waiting for the probe when the endpoint answers.
    answered: Notify,
}

impl Default for Silence {
    fn default() -> Self {
        Silence {
            unanswered: AtomicU32::new(0),
            probe: Arc::new(Semaphore::new(1)),
            answered: Notify::new(),
        }
    }
}

/// What a call that may go ahead holds: while the endpoint is silent, the probe's slot.
#[derive(Debug)]
pub struct Admitted(#[allow(dead_code)] Option<OwnedSemaphorePermit>);

impl Silence {
    pub fn is_silent(&self) -> bool {
        self.unanswered.load(Relaxed) >= SILENT_AFTER
    }

    /// Waits until a call may go to the endpoint: at once while it answers; while it is
    /// silent, when no other call is probing it or it has answered. Cancel-safe.
    pub async fn admit(&self) -> Admitted {
        loop {
            if !self.is_silent() {
                return Admitted(None);
            }
            let answered = self.answered.notified();
            tokio::pin!(answered);
            // Registered before the check, so an answer between the two is not missed.
            answered.as_mut().enable();
            if !self.is_silent() {
                return Admitted(None);
            }
            tokio::select! {
                permit = self.probe.clone().acquire_owned() => {
                    let Ok(permit) = permit else { return Admitted(None) };
                    return Admitted(self.is_silent().then_some(permit));
                }
                () = &mut answered => {}
            }
        }
    }

    /// A call to the endpoint ran out of time without an answer. Returns true when that made the
    /// endpoint silent.
    pub fn given_up(&self) -> bool {
        self.unanswered.fetch_add(1, Relaxed) + 1 == SILENT_AFTER
    }

    /// The endpoint answered. Returns true when it had been silent.
    pub fn answered(&self) -> bool {
        let was = self.unanswered.swap(0, Relaxed) >= SILENT_AFTER;
        if was {
            self.answered.notify_waiters();
        }
        was
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_silent_endpoint_takes_one_call_at_a_time_until_it_answers() {
        let s = Arc::new(Silence::default());
        let _ = s.admit().await;
        for _ in 1..SILENT_AFTER {
            assert!(!s.given_up());
        }
        assert!(s.given_up(), "the fourth call timed out makes it silent");
        let probe = s.admit().await;
        assert!(probe.0.is_some(), "the first call in is the probe");
        // A second call waits while the probe is out...
        let waiting = tokio::spawn({
            let s = s.clone();
            async move { s.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!waiting.is_finished());
        // ...and goes when the endpoint answers, as an ordinary call.
        assert!(s.answered());
        let admitted = tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("woken by the answer")
            .unwrap();
        assert!(admitted.0.is_none());
        drop(probe);
        assert!(!s.is_silent());
    }

    #[tokio::test(start_paused = true)]
    async fn a_probe_given_up_on_hands_over_to_the_next_call() {
        let s = Arc::new(Silence::default());
        for _ in 0..SILENT_AFTER {
            s.given_up();
        }
        let probe = s.admit().await;
        let next = tokio::spawn({
            let s = s.clone();
            async move { s.admit().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!next.is_finished());
        s.given_up();
        drop(probe);
        let next = tokio::time::timeout(Duration::from_secs(1), next)
            .await
            .expect("the next call becomes the probe")
            .unwrap();
        assert!(next.0.is_some());
    }
}
