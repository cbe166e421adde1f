//! When an endpoint counts as silent: calls given up on in a row without an answer in between
//! (a stopped process, a long pause, a host gone quiet with its connection still open).
//!
//! A silent endpoint is *down* (see `super::replicas`): its calls fail fast with UNAVAILABLE,
//! as a gRPC channel in TRANSIENT_FAILURE fails calls that do not wait for ready, while a
//! health check at a time asks whether it is back. Two reasons. A call sent to it would wait
//! its whole attempt timeout for nothing, and its caller with it. And every call given up on
//! is cancelled with an HTTP/2 RST_STREAM that a stopped server reads only when it resumes;
//! then it finds, all at once, every call opened and cancelled meanwhile. That is what the
//! rapid-reset attack looks like, and a server guarding against it (h2 closes the connection
//! with GOAWAY `ENHANCE_YOUR_CALM` past its limit of such streams) fails every call on the
//! connection. Sending it nothing keeps that number to the calls in flight when the stall
//! began (`tests/tests/it/stall_cancellation.rs`).
//!
//! A call given up on counts only if the endpoint answered nothing at all while it waited: an
//! overloaded endpoint whose line outgrew an attempt timeout still answers the calls at the
//! front of it, and is not silent (its limit deals with it). Any answer, even an error status,
//! ends the silence; a refused connection neither starts nor ends it (the replicas count those
//! on their own).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Calls timed out in a row at an endpoint, without an answer in between, that make it silent.
/// (A call its caller abandoned early says nothing about the endpoint and is not counted.)
pub const SILENT_AFTER: u32 = 4;

/// One endpoint's silence; see the module docs.
#[derive(Debug, Default)]
pub struct Silence {
    /// Calls timed out since the last answer, without an answer while they waited.
    unanswered: AtomicU32,
    /// When the endpoint last answered (nanoseconds since [`epoch`]); 0: never.
    last_answer: AtomicU64,
}

/// A fixed instant to count answer times from.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_nanos() -> u64 {
    epoch().elapsed().as_nanos() as u64
}

impl Silence {
    pub fn is_silent(&self) -> bool {
        self.unanswered.load(Relaxed) >= SILENT_AFTER
    }

    /// A call to the endpoint ran out of time without an answer after waiting `waited`.
    /// Returns true when that made the endpoint silent.
    pub fn given_up(&self, waited: Duration) -> bool {
        let since =
            Duration::from_nanos(now_nanos().saturating_sub(self.last_answer.load(Relaxed)));
        if since < waited {
            // Others were answered while it waited: a line, not silence.
            return false;
        }
        self.unanswered.fetch_add(1, Relaxed) + 1 == SILENT_AFTER
    }

    /// The endpoint answered. Returns true when it had been silent.
    pub fn answered(&self) -> bool {
        self.last_answer.store(now_nanos().max(1), Relaxed);
        self.unanswered.swap(0, Relaxed) >= SILENT_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAITED: Duration = Duration::from_millis(10);

    #[test]
    fn four_calls_given_up_in_a_row_make_an_endpoint_silent_and_an_answer_ends_it() {
        let s = Silence::default();
        epoch();
        std::thread::sleep(WAITED);
        for _ in 1..SILENT_AFTER {
            assert!(!s.given_up(WAITED));
        }
        assert!(!s.is_silent());
        assert!(
            s.given_up(WAITED),
            "the fourth call timed out makes it silent"
        );
        assert!(s.is_silent());
        assert!(!s.given_up(WAITED), "silent already: not news");
        assert!(s.answered());
        assert!(!s.is_silent());
        assert!(!s.answered(), "answering again is not news");
    }

    #[test]
    fn an_answer_in_between_starts_the_count_again() {
        let s = Silence::default();
        epoch();
        std::thread::sleep(WAITED);
        for _ in 1..SILENT_AFTER {
            s.given_up(WAITED);
        }
        s.answered();
        for _ in 1..SILENT_AFTER {
            assert!(!s.given_up(Duration::ZERO));
        }
        assert!(!s.is_silent());
    }

    #[test]
    fn calls_that_waited_while_others_were_answered_are_a_line_not_silence() {
        let s = Silence::default();
        s.answered();
        // Each gave up after a second, but the endpoint answered a moment ago.
        for _ in 0..10 {
            assert!(!s.given_up(Duration::from_secs(1)));
        }
        assert!(!s.is_silent());
    }
}
