//! An endpoint's answer time as the balancer weighs it: peak-EWMA, as Finagle, linkerd and
//! tower's `PeakEwma` keep it.

use std::time::Duration;

use tokio::time::Instant;

/// See the module docs. A slower answer than the estimate is taken at once (a replica that
/// turns slow is avoided at once); a faster one moves the estimate by how long it has been since
/// the last (smoothing, over about [`RTT_DECAY`]); and with no answers the estimate decays toward
/// zero, so an endpoint avoided for being slow is tried again now and then, and found recovered.
#[derive(Debug)]
pub(super) struct Rtt {
    nanos: f64,
    at: Instant,
}

/// How fast an endpoint's answer-time estimate forgets.
const RTT_DECAY: Duration = Duration::from_secs(10);
/// A new endpoint's estimate until it answers: low, so it is tried soon.
const RTT_START: Duration = Duration::from_millis(1);

impl Rtt {
    pub(super) fn new(now: Instant) -> Self {
        Rtt {
            nanos: RTT_START.as_nanos() as f64,
            at: now,
        }
    }

    fn decay(&self, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.at).as_nanos() as f64;
        (-elapsed / RTT_DECAY.as_nanos() as f64).exp()
    }

    /// The estimate at `now`.
    pub(super) fn estimate(&self, now: Instant) -> f64 {
        self.nanos * self.decay(now)
    }

    pub(super) fn observe(&mut self, took: Duration, now: Instant) {
        let took = took.as_nanos() as f64;
        let current = self.estimate(now);
        self.nanos = if took > current {
            took
        } else {
            let decay = self.decay(now);
            current * decay + took * (1.0 - decay)
        };
        self.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_answer_time_jumps_to_a_peak_and_forgets_it_slowly() {
        let start = Instant::now();
        let mut rtt = Rtt::new(start);
        rtt.observe(Duration::from_millis(10), start);
        assert!((rtt.estimate(start) - 10e6).abs() < 1.0);
        // A slow answer is taken at once.
        rtt.observe(Duration::from_millis(100), start);
        assert!((rtt.estimate(start) - 100e6).abs() < 1.0);
        // Fast answers soon after move it only a little...
        let soon = start + Duration::from_millis(100);
        rtt.observe(Duration::from_millis(10), soon);
        assert!(rtt.estimate(soon) > 90e6, "{}", rtt.estimate(soon));
        // ...and with no answers it decays: after a decay time, to about a third.
        let later = soon + RTT_DECAY;
        assert!(rtt.estimate(later) < 40e6, "{}", rtt.estimate(later));
    }
}
