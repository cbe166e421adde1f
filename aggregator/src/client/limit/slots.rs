//! One backend's slots: a semaphore whose size is the limit (fixed, or what [`Control`]
//! decides), a wait for a slot bounded by `--queue-timeout` and the call's deadline, and the
//! door's reservations (see `crate::admission`).
//!
//! tower's `ConcurrencyLimit` waits for a permit in `poll_ready`, before it sees the request,
//! so it cannot bound a call's wait by that call's deadline, and its limit is fixed.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Limit;
use super::control::{self, Answer, Change, Control, Regime, Totals};
use crate::client::error::CallError;

/// The wait for a slot under an adaptive limit, unless `--queue-timeout` says otherwise: an
/// enforced adaptive limit means the backend is overloaded, and a call that waits for it
/// would only wait in its line.
pub const AUTO_QUEUE_TIMEOUT: Duration = Duration::from_millis(20);

/// One backend's slots, shared by every runtime that calls it.
#[derive(Debug)]
pub struct Limiter {
    backend: Arc<str>,
    slots: Arc<Semaphore>,
    /// The limit now.
    limit: AtomicUsize,
    /// Slots to take out of circulation as calls end, after the limit fell below the calls in
    /// flight.
    owed: AtomicUsize,
    /// How long a call may wait for a slot; `None`: until its deadline.
    queue_timeout: Option<Duration>,
    adaptive: Option<Mutex<Control>>,
    /// Whether the adaptive limit is enforced (the backend is overloaded); read by the door.
    overloaded: AtomicBool,
    pub in_flight: AtomicU64,
    /// Calls waiting for a slot now.
    pub queued: AtomicU64,
    /// Calls that gave up waiting after `--queue-timeout`.
    pub over_limit: AtomicU64,
    /// Aggregate calls admitted that still need this backend (the door's count).
    reserved: AtomicUsize,
    /// Aggregate calls the door refused for this backend's limit.
    pub door_refusals: AtomicU64,
    started: AtomicU64,
    ended: AtomicU64,
}

impl Limiter {
    pub fn new(backend: Arc<str>, limit: Limit, queue_timeout: Option<Duration>) -> Self {
        let (start, adaptive, queue_timeout) = match limit {
            Limit::Fixed(n) => (n, None, queue_timeout),
            Limit::Auto => (
                control::OPEN,
                Some(Mutex::new(Control::new(Instant::now().into_std()))),
                Some(queue_timeout.unwrap_or(AUTO_QUEUE_TIMEOUT)),
            ),
        };
        Limiter {
            backend,
            slots: Arc::new(Semaphore::new(start)),
            limit: AtomicUsize::new(start),
            owed: AtomicUsize::new(0),
            queue_timeout,
            adaptive,
            overloaded: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            over_limit: AtomicU64::new(0),
            reserved: AtomicUsize::new(0),
            door_refusals: AtomicU64::new(0),
            started: AtomicU64::new(0),
            ended: AtomicU64::new(0),
        }
    }

    /// The limit now.
    pub fn limit(&self) -> usize {
        self.limit.load(Relaxed)
    }

    pub fn is_adaptive(&self) -> bool {
        self.adaptive.is_some()
    }

    /// Whether an adaptive limit is enforced now: the backend was found overloaded.
    pub fn is_overloaded(&self) -> bool {
        self.overloaded.load(Relaxed)
    }

    /// The backend's no-load answer time, as the adaptive limit knows it.
    pub fn no_load(&self) -> Option<Duration> {
        let control = self.adaptive.as_ref()?;
        control.lock().unwrap_or_else(|p| p.into_inner()).no_load()
    }

    /// A place for one more aggregate call that needs this backend, or the limit that refuses
    /// it: only an enforced adaptive limit refuses (a fixed one makes calls wait for a slot).
    pub fn reserve(self: &Arc<Self>) -> Result<Reservation, usize> {
        let before = self.reserved.fetch_add(1, Relaxed);
        let reservation = Reservation(self.clone());
        let limit = self.limit();
        if self.is_overloaded() && before >= limit {
            return Err(limit);
        }
        Ok(reservation)
    }

    /// The door refused a call for this backend's limit.
    pub fn refused_at_door(&self) {
        self.door_refusals.fetch_add(1, Relaxed);
    }

    /// Waits for a slot: at most `--queue-timeout` (RESOURCE_EXHAUSTED), and never past
    /// `deadline` (DEADLINE_EXCEEDED).
    pub async fn acquire(self: &Arc<Self>, deadline: Instant) -> Result<Slot, CallError> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let asked = Instant::now();
                let until = match self.queue_timeout {
                    Some(q) => deadline.min(asked + q),
                    None => deadline,
                };
                self.queued.fetch_add(1, Relaxed);
                let got = tokio::time::timeout_at(until, self.slots.clone().acquire_owned()).await;
                self.queued.fetch_sub(1, Relaxed);
                match got {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => {
                        return Err(CallError::Status(tonic::Status::unavailable(
                            "shutting down",
                        )));
                    }
                    Err(_) if until < deadline => {
                        self.over_limit.fetch_add(1, Relaxed);
                        return Err(CallError::OverLimit {
                            limit: self.limit(),
                            adaptive: self.is_adaptive(),
                            waited: asked.elapsed(),
                        });
                    }
                    Err(_) => {
                        return Err(CallError::NoSlot {
                            limit: self.limit(),
                        });
                    }
                }
            }
        };
        let in_flight = self.in_flight.fetch_add(1, Relaxed) + 1;
        self.started.fetch_add(1, Relaxed);
        Ok(Slot {
            limiter: self.clone(),
            permit: Some(permit),
            started: Instant::now(),
            in_flight: in_flight as usize,
        })
    }

    /// Sets the limit to `new`: more slots at once, fewer as calls end.
    fn set(&self, new: usize) {
        let old = self.limit.swap(new, Relaxed);
        if new > old {
            let mut more = new - old;
            // Pay back slots still owed first.
            while more > 0 {
                let owed = self.owed.load(Relaxed);
                if owed == 0 {
                    break;
                }
                let pay = owed.min(more);
                if self
                    .owed
                    .compare_exchange(owed, owed - pay, Relaxed, Relaxed)
                    .is_ok()
                {
                    more -= pay;
                }
            }
            self.slots.add_permits(more);
        } else if new < old {
            let fewer = old - new;
            let taken = self.slots.forget_permits(fewer);
            self.owed.fetch_add(fewer - taken, Relaxed);
        }
    }

    fn totals(&self) -> Totals {
        Totals {
            started: self.started.load(Relaxed),
            ended: self.ended.load(Relaxed),
            refused: self.over_limit.load(Relaxed) + self.door_refusals.load(Relaxed),
        }
    }

    /// One call answered, or given up on, for the adaptive limit.
    fn observe(&self, took: Duration, in_flight: usize, answered: bool) {
        let Some(adaptive) = &self.adaptive else {
            return;
        };
        let now = Instant::now().into_std();
        let answer = Answer {
            took,
            in_flight,
            answered,
        };
        let decision = {
            let mut control = adaptive.lock().unwrap_or_else(|p| p.into_inner());
            control.observe(now, answer, self.totals())
        };
        let Some(d) = decision else { return };
        let old = self.limit();
        if d.limit != old {
            tracing::debug!(
                backend = &*self.backend,
                from = old,
                to = d.limit,
                "limit moved"
            );
        }
        self.set(d.limit);
        self.overloaded
            .store(d.regime == Regime::Overloaded, Relaxed);
        self.log(d.change, d.limit);
    }

    fn log(&self, change: Option<Change>, limit: usize) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        match change {
            None => {}
            Some(Change::Overloaded {
                no_load,
                median,
                evidence,
            }) => tracing::warn!(
                backend = &*self.backend,
                limit,
                no_load_ms = ms(no_load),
                median_ms = ms(median),
                ?evidence,
                "backend overloaded: calls pile up and answers slow down; calls beyond the \
                 adaptive limit are refused (RESOURCE_EXHAUSTED) until it keeps up again"
            ),
            Some(Change::Recovered) => tracing::info!(
                backend = &*self.backend,
                "backend keeps up again: its adaptive limit no longer refuses calls"
            ),
            Some(Change::Slower { from, to }) => tracing::info!(
                backend = &*self.backend,
                from_ms = ms(from),
                to_ms = ms(to),
                limit,
                "backend slower, not queueing: fewer calls in flight did not make its answers \
                 faster; its no-load answer time is now the slower one"
            ),
        }
    }
}

/// An admitted aggregate call's place at one backend, held until that backend's part ends.
#[derive(Debug)]
pub struct Reservation(Arc<Limiter>);

impl Drop for Reservation {
    fn drop(&mut self) {
        self.0.reserved.fetch_sub(1, Relaxed);
    }
}

/// A slot at a backend, held while a call is there.
#[derive(Debug)]
pub struct Slot {
    limiter: Arc<Limiter>,
    permit: Option<OwnedSemaphorePermit>,
    started: Instant,
    /// Calls in flight at the backend when this one started, itself included.
    in_flight: usize,
}

impl Slot {
    /// The call answered: its time feeds the adaptive limit.
    pub fn answered(self) {
        self.limiter
            .observe(self.started.elapsed(), self.in_flight, true);
    }

    /// The call ran out of time waiting for its answer: how long it waited feeds the adaptive
    /// limit too (a line that outgrew the timeouts answers nobody in time, and must still be
    /// seen).
    pub fn given_up(self) {
        self.limiter
            .observe(self.started.elapsed(), self.in_flight, false);
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.limiter.in_flight.fetch_sub(1, Relaxed);
        self.limiter.ended.fetch_add(1, Relaxed);
        let Some(permit) = self.permit.take() else {
            return;
        };
        // A slot the limit no longer has goes out of circulation.
        let owed = &self.limiter.owed;
        let mut n = owed.load(Relaxed);
        while n > 0 {
            match owed.compare_exchange(n, n - 1, Relaxed, Relaxed) {
                Ok(_) => {
                    permit.forget();
                    return;
                }
                Err(now) => n = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shrinking_limit_takes_slots_back_as_calls_end() {
        let l = Arc::new(Limiter::new(
            "b".into(),
            Limit::Fixed(4),
            Some(Duration::from_millis(5)),
        ));
        let far = Instant::now() + Duration::from_secs(5);
        let slots: Vec<Slot> = futures::future::join_all((0..4).map(|_| l.acquire(far)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        l.set(2);
        drop(slots);
        // Two slots now, whatever the four calls that held them did.
        let a = l.acquire(far).await.unwrap();
        let b = l.acquire(far).await.unwrap();
        let refused = l.acquire(far).await.unwrap_err();
        assert!(
            matches!(refused, CallError::OverLimit { limit: 2, .. }),
            "{refused:?}"
        );
        drop((a, b));
        l.set(3);
        let held: Vec<Slot> = futures::future::join_all((0..3).map(|_| l.acquire(far)))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(held.len(), 3);
    }

    #[test]
    fn the_door_refuses_only_past_an_enforced_limit() {
        let l = Arc::new(Limiter::new("b".into(), Limit::Auto, None));
        // Open: the ceiling is far away, and nothing is refused.
        let open: Vec<_> = (0..100).map(|_| l.reserve().unwrap()).collect();
        l.set(3);
        l.overloaded.store(true, Relaxed);
        assert_eq!(l.reserve().unwrap_err(), 3, "100 reserved, the limit 3");
        drop(open);
        let held: Vec<_> = (0..3).map(|_| l.reserve().unwrap()).collect();
        assert!(l.reserve().is_err());
        drop(held);
        assert_eq!(l.reserved.load(Relaxed), 0);
    }
}
