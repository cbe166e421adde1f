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
//! began (`tests/tests/stall_cancellation.rs`).
//!
//! Any answer, even an error status, ends the silence; a refused connection neither starts
//! nor ends it (the replicas count those on their own).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

/// Calls timed out in a row at an endpoint, without an answer in between, that make it silent.
/// (A call its caller abandoned early says nothing about the endpoint and is not counted.)
pub const SILENT_AFTER: u32 = 4;

/// One endpoint's silence; see the module docs.
#[derive(Debug, Default)]
pub struct Silence {
    /// Calls timed out since the last answer.
    unanswered: AtomicU32,
}

impl Silence {
    pub fn is_silent(&self) -> bool {
        self.unanswered.load(Relaxed) >= SILENT_AFTER
    }

    /// A call to the endpoint ran out of time without an answer. Returns true when that made the
    /// endpoint silent.
    pub fn given_up(&self) -> bool {
        self.unanswered.fetch_add(1, Relaxed) + 1 == SILENT_AFTER
    }

    /// The endpoint answered. Returns true when it had been silent.
    pub fn answered(&self) -> bool {
        self.unanswered.swap(0, Relaxed) >= SILENT_AFTER
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn four_calls_given_up_in_a_row_make_an_endpoint_silent_and_an_answer_ends_it() {
        let s = Silence::default();
        for _ in 1..SILENT_AFTER {
            assert!(!s.given_up());
        }
        assert!(!s.is_silent());
        assert!(s.given_up(), "the fourth call timed out makes it silent");
        assert!(s.is_silent());
        assert!(!s.given_up(), "silent already: not news");
        assert!(s.answered());
        assert!(!s.is_silent());
        assert!(!s.answered(), "answering again is not news");
    }

    #[test]
    fn an_answer_in_between_starts_the_count_again() {
        let s = Silence::default();
        for _ in 1..SILENT_AFTER {
            s.given_up();
        }
        s.answered();
        for _ in 1..SILENT_AFTER {
            assert!(!s.given_up());
        }
        assert!(!s.is_silent());
    }
}
