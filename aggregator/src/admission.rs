//! Admission: whether a new aggregate call is taken at all (`--max-in-flight`). Past the limit a
//! call is refused at once with RESOURCE_EXHAUSTED: nothing queues at the door, so memory stays
//! bounded and a caller learns at once to back off.
//!
//! `auto` admits as many calls as the backends take now: the smallest of their adaptive
//! concurrency limits (which follow the backends' latency), since a call fanned out to every
//! backend holds a slot at each. No more: each call admitted past a backend's limit would wait
//! `--queue-timeout` there and come back with that backend's RESOURCE_EXHAUSTED beside the
//! others' answers, a degraded answer for the caller and work wasted at the other backends.
//! Twice the smallest limit, tried first as headroom for a limit's dips, did exactly that under
//! overload: at 2x the deployment's capacity 45% of the admitted calls came back degraded and
//! the good answers were 70% of capacity (94-97% with one limit's worth). Backends with a fixed
//! limit keep their behaviour (calls wait for a slot, bounded by the deadline), and do not bound
//! admission: with no adaptive limit, `auto` admits [`WITHOUT_ADAPTIVE`].

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::backends::Backends;

/// `--max-in-flight`: a fixed number of aggregate calls, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Fixed(usize),
    Auto,
}

/// What `auto` admits when no backend has an adaptive limit to follow.
pub const WITHOUT_ADAPTIVE: usize = 1000;

/// The most aggregate calls in flight `--max-in-flight` may name.
pub const MAX_ADMISSION: usize = 1_000_000;

impl FromStr for Admission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let count = crate::client::limit::auto_or_count(s, MAX_ADMISSION)?;
        Ok(count.map_or(Admission::Auto, Admission::Fixed))
    }
}

impl fmt::Display for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Admission::Fixed(n) => write!(f, "{n}"),
            Admission::Auto => f.write_str("auto"),
        }
    }
}

/// The door: counts the calls admitted and in flight.
#[derive(Debug)]
pub struct Gate {
    admission: Admission,
    in_flight: Arc<AtomicUsize>,
}

/// An admitted call's place; dropping it frees the place.
#[derive(Debug)]
pub struct Ticket(Arc<AtomicUsize>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl Gate {
    pub fn new(admission: Admission) -> Self {
        Gate {
            admission,
            in_flight: Arc::default(),
        }
    }

    /// The limit now.
    pub fn limit(&self, backends: &Backends) -> usize {
        match self.admission {
            Admission::Fixed(n) => n,
            Admission::Auto => backends
                .iter()
                .filter(|b| b.limiter().is_adaptive())
                .map(|b| b.limiter().limit())
                .min()
                .unwrap_or(WITHOUT_ADAPTIVE)
                .max(1),
        }
    }

    /// A place for one more call, or the limit that refuses it.
    pub fn enter(&self, backends: &Backends) -> Result<Ticket, usize> {
        let limit = self.limit(backends);
        if self.in_flight.fetch_add(1, Relaxed) >= limit {
            self.in_flight.fetch_sub(1, Relaxed);
            return Err(limit);
        }
        Ok(Ticket(self.in_flight.clone()))
    }

    pub fn is_auto(&self) -> bool {
        self.admission == Admission::Auto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_reads_auto_or_a_number() {
        assert_eq!("auto".parse(), Ok(Admission::Auto));
        assert_eq!("10".parse(), Ok(Admission::Fixed(10)));
        for bad in ["0", "many", "-1"] {
            assert!(
                bad.parse::<Admission>()
                    .unwrap_err()
                    .contains("neither `auto`")
            );
        }
    }
}
