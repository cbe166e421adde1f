//! Where a call goes: power of two choices over the endpoints up and in rotation.

use std::sync::Arc;

use tokio::time::Instant;

use super::{Pick, Replica, Replicas};

impl Replicas {
    /// Power of two choices: of the endpoints up and in rotation, preferring those this call
    /// has not tried yet, two at random, and of those the cheaper: answer time (peak-EWMA)
    /// times the calls it would then have in flight. Endpoints known down are never picked;
    /// when all are, the call fails fast.
    pub fn pick(&self, tried: &[u64]) -> Pick {
        let set = self.current();
        if set.is_empty() {
            return Pick::None;
        }
        let now = Instant::now();
        let up: Vec<&Arc<Replica>> = set.iter().filter(|r| !r.is_down()).collect();
        if up.is_empty() {
            let why: Vec<String> = set.iter().map(|r| r.down_because()).collect();
            return Pick::AllDown(format!(
                "{}; failing fast until a health check finds it back",
                why.join("; ")
            ));
        }
        let in_rotation: Vec<&Arc<Replica>> = up
            .iter()
            .copied()
            .filter(|r| !self.returned_or_out(r, now))
            .collect();
        let untried: Vec<&Arc<Replica>> = in_rotation
            .iter()
            .copied()
            .filter(|r| !tried.contains(&r.id))
            .collect();
        let pool = if !untried.is_empty() {
            untried
        } else if !in_rotation.is_empty() {
            in_rotation
        } else {
            // Every endpoint up but ejected cannot happen (at most half are), but a set of one
            // whose only endpoint is out still gets called: better a likely failure than none.
            up
        };
        use rand::Rng;
        let mut rng = rand::rng();
        let pick = match pool.len() {
            1 => pool[0],
            n => {
                let a = rng.random_range(0..n);
                let b = (a + rng.random_range(1..n)) % n;
                let (a, b) = (pool[a], pool[b]);
                if a.cost(now) <= b.cost(now) { a } else { b }
            }
        };
        Pick::Endpoint(pick.clone())
    }

    /// Whether `r` is out of the rotation; notes (and logs) an ejection that has run out.
    fn returned_or_out(&self, r: &Replica, now: Instant) -> bool {
        let mut e = r.lock();
        match e.until {
            Some(until) if until > now => true,
            Some(_) => {
                e.until = None;
                tracing::info!(
                    backend = &*self.backend,
                    endpoint = r.addr,
                    "endpoint returns to the rotation"
                );
                false
            }
            None => false,
        }
    }
}
