//! Sleeps that end when they should: for the backends' simulated latency and the loadgen's
//! open-loop schedule.
//!
//! tokio's timer counts whole milliseconds: it rounds a deadline up to the next tick, and its
//! driver parks in `epoll_wait`, whose timeout is in milliseconds too. A 50 ms
//! `tokio::time::sleep` takes 50 to 52 ms, about 1 ms more than asked on average. That is fine
//! for a timeout; it is not fine for what fanout measures with: the latency a backend was told
//! to simulate (BENCHMARKS.md §1), and the moment a call of an open loop is due, from which its
//! latency is counted (a call sent a millisecond late would be charged that millisecond).
//!
//! So both wait with [`sleep`] and [`sleep_until`]: one thread per process keeps the deadlines in
//! order and waits on a condition variable until the earliest (a futex with a nanosecond timeout;
//! the kernel adds its timer slack, 50 µs by default), then wakes every task whose deadline has
//! passed. No file descriptor per sleep, unlike timerfd-based crates (ten thousand outstanding
//! calls would need ten thousand descriptors), and a sleep dropped early (a cancelled call) takes
//! its deadline out at once.
//!
//! The wait is still asynchronous: the task gives its worker back while it waits, exactly as with
//! `tokio::time::sleep`.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Waits until `delay` has passed, to within the kernel's timer slack.
pub fn sleep(delay: Duration) -> Sleep {
    sleep_until(Instant::now() + delay)
}

/// Waits until `deadline`, to within the kernel's timer slack.
pub fn sleep_until(deadline: Instant) -> Sleep {
    Sleep {
        deadline,
        key: None,
    }
}

/// The future [`sleep`] returns.
#[derive(Debug)]
#[must_use = "a sleep does nothing unless awaited"]
pub struct Sleep {
    deadline: Instant,
    /// Where this sleep's waker is filed, once it has been polled before its deadline.
    key: Option<Key>,
}

/// Deadlines in order; the sequence number tells equal deadlines apart.
type Key = (Instant, u64);

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            // The timer thread takes a passed deadline out itself (it may have already).
            self.key = None;
            return Poll::Ready(());
        }
        let deadline = self.deadline;
        let timer = timer();
        let mut state = timer.lock();
        match self.key {
            Some(key) => {
                // Polled again before the deadline: keep the waker current (the timer thread
                // only removes an entry once its deadline has passed, so it is still there).
                if let Some(waker) = state.due.get_mut(&key)
                    && !waker.will_wake(cx.waker())
                {
                    *waker = cx.waker().clone();
                }
            }
            None => {
                state.sequence += 1;
                let key = (deadline, state.sequence);
                let earliest = state.due.first_key_value().is_none_or(|(k, _)| key < *k);
                state.due.insert(key, cx.waker().clone());
                self.key = Some(key);
                drop(state);
                if earliest {
                    // The timer thread may be waiting for a later deadline.
                    timer.changed.notify_one();
                }
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            timer().lock().due.remove(&key);
        }
    }
}

struct Timer {
    state: Mutex<State>,
    /// Notified when a new earliest deadline is filed.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    due: BTreeMap<Key, Waker>,
    sequence: u64,
}

impl Timer {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock (wakers are woken after it is released).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The timer thread: wakes each task once its deadline has passed.
    fn run(&self) {
        let mut expired = Vec::new();
        let mut state = self.lock();
        loop {
            let now = Instant::now();
            while let Some(entry) = state.due.first_entry() {
                if entry.key().0 > now {
                    break;
                }
                expired.push(entry.remove());
            }
            if !expired.is_empty() {
                drop(state);
                expired.drain(..).for_each(Waker::wake);
                state = self.lock();
                continue;
            }
            state = match state.due.first_key_value() {
                Some(((deadline, _), _)) => {
                    let wait = deadline.saturating_duration_since(now);
                    self.changed
                        .wait_timeout(state, wait)
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .0
                }
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(|poisoned| poisoned.into_inner()),
            };
        }
    }
}

/// The process's timer, its thread started on first use.
fn timer() -> &'static Timer {
    static TIMER: OnceLock<&'static Timer> = OnceLock::new();
    TIMER.get_or_init(|| {
        let timer: &'static Timer = Box::leak(Box::new(Timer {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
        }));
        std::thread::Builder::new()
            .name("fanout-timer".into())
            .spawn(move || timer.run())
            .expect("cannot start the timer thread");
        timer
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sleeps_at_least_as_long_as_asked() {
        for ms in [0, 1, 3, 20] {
            let asked = Duration::from_millis(ms);
            let start = Instant::now();
            sleep(asked).await;
            assert!(start.elapsed() >= asked, "{ms} ms");
        }
    }

    #[tokio::test]
    async fn many_sleeps_each_last_their_own_time() {
        let start = Instant::now();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        // Filed in reverse: each new one is the earliest, so the timer thread is re-aimed.
        for ms in (1..=30u64).rev() {
            let tx = tx.clone();
            tokio::spawn(async move {
                sleep(Duration::from_millis(ms * 2)).await;
                let _ = tx.send((ms, start.elapsed()));
            });
        }
        drop(tx);
        let mut got = Vec::new();
        while let Some((ms, elapsed)) = rx.recv().await {
            assert!(
                elapsed >= Duration::from_millis(ms * 2),
                "{ms}: {elapsed:?}"
            );
            got.push(ms);
        }
        // The order of neighbours 2 ms apart is not asserted: a loaded machine may run two
        // woken tasks in either order.
        got.sort_unstable();
        assert_eq!(got, (1..=30).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_dropped_sleep_leaves_no_deadline_behind() {
        let mut cancelled = Box::pin(sleep(Duration::from_secs(3600)));
        // Poll once so that it is filed.
        assert!(poll_once(cancelled.as_mut()).await.is_pending());
        let filed = timer()
            .lock()
            .due
            .keys()
            .any(|(deadline, _)| *deadline > Instant::now() + Duration::from_secs(3000));
        assert!(filed);
        drop(cancelled);
        let left = timer()
            .lock()
            .due
            .keys()
            .any(|(deadline, _)| *deadline > Instant::now() + Duration::from_secs(3000));
        assert!(!left, "the hour-long deadline is still filed");
    }

    async fn poll_once<F: Future + Unpin>(mut f: F) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut f).poll(cx))).await
    }
}
