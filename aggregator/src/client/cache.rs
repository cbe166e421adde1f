//! The result cache (the tutorials' weather cache with a TTL), as the outermost layer: a reply
//! to the same request within `--cache-ttl` is answered from memory, marked `from_cache`, with
//! no attempt made. Only replies are kept, never failures; a request that is not `cacheable`
//! (`no_cache`, or overrides that change what the backend does) neither reads nor writes it.
//! Bounded in entries, so memory stays bounded.

use std::hash::Hash;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tower::{Layer, Service};

use super::call::{Cacheable, Param};
use super::error::Failed;
use super::{Answered, StackCounters};

/// Most entries kept; the least useful are evicted past it.
pub const MAX_ENTRIES: u64 = 100_000;

/// Replies by key, shared by every backend's layer (keys name the backend), so one `ClearCache`
/// empties it.
pub struct Cache<K, V>(moka::sync::Cache<K, V>);

impl<K, V> std::fmt::Debug for Cache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cache")
    }
}

impl<K, V> Clone for Cache<K, V> {
    fn clone(&self) -> Self {
        Cache(self.0.clone())
    }
}

impl<K, V> Cache<K, V>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
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

    pub fn get(&self, key: &K) -> Option<V> {
        self.0.get(key)
    }

    pub fn insert(&self, key: K, value: V) {
        self.0.insert(key, value);
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

/// Makes [`Cached`] services over one [`Cache`], keyed by `key(request)`.
pub struct CacheLayer<K, V, F> {
    cache: Cache<K, V>,
    key: Arc<F>,
    counters: Arc<StackCounters>,
}

impl<K, V, F> CacheLayer<K, V, F>
where
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    pub fn new(cache: Cache<K, V>, key: F, counters: Arc<StackCounters>) -> Self {
        CacheLayer {
            cache,
            key: Arc::new(key),
            counters,
        }
    }
}

impl<S, K, V, F> Layer<S> for CacheLayer<K, V, F> {
    type Service = Cached<S, K, V, F>;
    fn layer(&self, inner: S) -> Self::Service {
        Cached {
            inner,
            cache: self.cache.clone(),
            key: self.key.clone(),
            counters: self.counters.clone(),
        }
    }
}

/// See the module docs.
pub struct Cached<S, K, V, F> {
    inner: S,
    cache: Cache<K, V>,
    key: Arc<F>,
    counters: Arc<StackCounters>,
}

impl<S: Clone, K, V, F> Clone for Cached<S, K, V, F> {
    fn clone(&self) -> Self {
        Cached {
            inner: self.inner.clone(),
            cache: self.cache.clone(),
            key: self.key.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<S, Req, K, V, F> Service<Req> for Cached<S, K, V, F>
where
    Req: Param<Cacheable>,
    S: Service<Req, Response = Answered<V>, Error = Failed>,
    S::Future: Send + 'static,
    K: Hash + Eq + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    F: Fn(&Req) -> K,
{
    type Response = Answered<V>;
    type Error = Failed;
    type Future = BoxFuture<'static, Result<Answered<V>, Failed>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Failed>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Cacheable(cacheable) = req.param();
        if !cacheable {
            return self.inner.call(req).boxed();
        }
        let key = (self.key)(&req);
        if let Some(reply) = self.cache.get(&key) {
            StackCounters::bump(&self.counters.cache_hits);
            let answer = Answered {
                reply,
                attempts: 0,
                from_cache: true,
                winner: 0,
                hedged: false,
            };
            return futures::future::ready(Ok(answer)).boxed();
        }
        StackCounters::bump(&self.counters.cache_misses);
        let (call, cache) = (self.inner.call(req), self.cache.clone());
        async move {
            let answer = call.await?;
            cache.insert(key, answer.reply.clone());
            Ok(answer)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_ttl_is_off_and_entries_clear() {
        assert!(Cache::<(&str, &str), u32>::new(Duration::ZERO).is_none());
        let c = Cache::new(Duration::from_secs(60)).unwrap();
        c.insert(("a", "q"), 1);
        c.insert(("b", "q"), 2);
        assert_eq!(c.get(&("a", "q")), Some(1));
        assert!(c.get(&("a", "other")).is_none());
        assert_eq!(c.clear(), 2);
        assert!(c.get(&("a", "q")).is_none());
    }
}
