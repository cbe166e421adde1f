//! Admission: whether a new aggregate call is taken at all (`--max-in-flight`). A refused call
//! gets RESOURCE_EXHAUSTED at once: nothing queues at the door, so memory stays bounded and a
//! caller learns at once to back off.
//!
//! `auto` refuses a call only for real overload: when a backend the call needs has been found
//! overloaded (its adaptive limit is enforced, see `client::limit::control`) and as many
//! admitted calls already need it as that limit allows. A call refused whole costs nothing
//! anywhere; a call admitted past an overloaded backend's limit would wait there, come back
//! with that backend's RESOURCE_EXHAUSTED beside the others' answers (a degraded answer), and
//! waste the other backends' work. Nothing else refuses: a backend that is down or silent is
//! not overloaded (its own part fails fast instead), and a backend with a fixed limit makes
//! calls wait for its slots. Over all of that, `auto` holds at most [`AUTO_CEILING`] calls.
//!
//! Each admitted call holds a [`Reservation`] at every backend it targets until that backend's
//! part ends: that count, not the calls at the backend right now, is what the door compares
//! with the limit, so calls admitted together cannot overrun it.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::backends::Backends;
use crate::client::limit::Reservation;

/// `--max-in-flight`: a fixed number of aggregate calls, or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Fixed(usize),
    Auto,
}

/// The most aggregate calls `auto` holds at once, whatever the backends: a bound on memory,
/// far above what a healthy deployment of this size has in flight.
pub const AUTO_CEILING: usize = 10_000;

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

/// Why the door refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// `--max-in-flight` (or `auto`'s ceiling) reached.
    Full { limit: usize },
    /// A backend the call needs is overloaded, and at its limit.
    Overloaded { backend: String, limit: usize },
}

/// The door: counts the calls admitted and in flight.
#[derive(Debug)]
pub struct Gate {
    admission: Admission,
    in_flight: Arc<AtomicUsize>,
}

/// An admitted call's place; dropping it frees the place. Its reservations, one per target in
/// the plan's order, are taken out by the fan-out so each ends with its backend's part.
#[derive(Debug)]
pub struct Ticket {
    _place: Place,
    pub reservations: Vec<Option<Reservation>>,
}

#[derive(Debug)]
struct Place(Arc<AtomicUsize>);

impl Drop for Place {
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

    /// The most calls in flight now.
    pub fn limit(&self) -> usize {
        match self.admission {
            Admission::Fixed(n) => n,
            Admission::Auto => AUTO_CEILING,
        }
    }

    /// A place for one more call to the backends at `targets`, or why not.
    pub fn enter(&self, backends: &Backends, targets: &[usize]) -> Result<Ticket, Refused> {
        let limit = self.limit();
        if self.in_flight.fetch_add(1, Relaxed) >= limit {
            self.in_flight.fetch_sub(1, Relaxed);
            return Err(Refused::Full { limit });
        }
        let place = Place(self.in_flight.clone());
        let mut reservations = Vec::with_capacity(targets.len());
        for &i in targets {
            let backend = backends.get(i);
            match backend.limiter().reserve() {
                Ok(r) => reservations.push(Some(r)),
                // A fixed --max-in-flight is the operator's word: the backends' limits then
                // only make calls wait or fail their own part.
                Err(_) if self.admission != Admission::Auto => reservations.push(None),
                Err(limit) => {
                    backend.limiter().refused_at_door();
                    return Err(Refused::Overloaded {
                        backend: backend.name.clone(),
                        limit,
                    });
                }
            }
        }
        Ok(Ticket {
            _place: place,
            reservations,
        })
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
