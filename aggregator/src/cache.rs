//! The result cache (the tutorials' weather cache with a TTL): a backend's successful reply to
//! a query, kept for `--cache-ttl`. Failures are never cached; requests with overrides or
//! `no_cache` bypass it. Bounded in entries, so memory stays bounded.

use std::time::Duration;

use fanout_proto::v1::FetchReply;

/// Most entries kept; the least useful are evicted past it.
pub const MAX_ENTRIES: u64 = 100_000;

/// Replies keyed by (backend, query).
#[derive(Debug, Clone)]
pub struct Cache(moka::sync::Cache<(String, String), FetchReply>);

impl Cache {
    /// A cache whose entries live `ttl`; `None` when `ttl` is zero (the cache is off).
    pub fn new(ttl: Duration) -> Option<Self> {
        (!ttl.is_zero()).then(|| {
            Cache(
                moka::sync::Cache::builder()
                    .max_capacity(MAX_ENTRIES)
                    .time_to_live(ttl)
                    .build(),
            )
        })
    }

    pub fn get(&self, backend: &str, query: &str) -> Option<FetchReply> {
        self.0.get(&(backend.to_owned(), query.to_owned()))
    }

    pub fn insert(&self, backend: &str, query: &str, reply: FetchReply) {
        self.0.insert((backend.to_owned(), query.to_owned()), reply);
    }

    /// Empties the cache; returns how many entries it held.
    pub fn clear(&self) -> u64 {
        self.0.run_pending_tasks();
        let n = self.0.entry_count();
        self.0.invalidate_all();
        self.0.run_pending_tasks();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_ttl_is_off_and_entries_clear() {
        assert!(Cache::new(Duration::ZERO).is_none());
        let c = Cache::new(Duration::from_secs(60)).unwrap();
        c.insert("a", "q", FetchReply::default());
        c.insert("b", "q", FetchReply::default());
        assert!(c.get("a", "q").is_some());
        assert!(c.get("a", "other").is_none());
        assert_eq!(c.clear(), 2);
        assert!(c.get("a", "q").is_none());
    }
}
