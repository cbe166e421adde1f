//! What a request carries down the stack: its message and typed values, one type per thing a
//! layer needs to know. A layer names in its bounds the values it reads ([`Param<T>`]) and those
//! it sets ([`SetParam<T>`]), and nothing else reaches it (the manner of linkerd2-proxy's
//! `Param<T>`): the attempt timeout declares `Param<Deadline> + SetParam<Deadline> +
//! Param<PerAttemptTimeout> + Param<AttemptNumber>`, so it can be lifted, reordered or tested
//! with a request type of four fields. [`Call`] is the request type of the aggregator's stack,
//! which has them all.
//!
//! Two counts are easy to confuse, so they are two types: a [`Try`] is what the retry policy
//! counts (a try and its hedges share its number), an [`AttemptNumber`] is what the attempt layer
//! counts (every attempt of the call, retries and hedges alike: the n-th one made).

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// A value of type `T` the request carries.
pub trait Param<T> {
    fn param(&self) -> T;
}

/// A value of type `T` a layer sets on the request for the layers below it.
pub trait SetParam<T> {
    fn set_param(&mut self, value: T);
}

/// When the whole call must end, retries and waits included. A layer that bounds one attempt
/// narrows it for the layers below; the lowest sends what remains as `grpc-timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// What is left of it now.
    pub fn left(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// The bound on one attempt; the deadline may cut an attempt shorter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerAttemptTimeout(pub Duration);

/// Which try of the call this is, as the retry policy counts: from 1, a try and its hedges
/// sharing the number; and how long the policy waited before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Try {
    pub number: u32,
    pub backoff: Duration,
}

impl Try {
    /// The first try, sent at once.
    pub const FIRST: Try = Try {
        number: 1,
        backoff: Duration::ZERO,
    };
}

/// Whether this attempt is a hedge (the hedge layer sets it on the copies it sends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsHedge(pub bool);

/// The request's own hedge delay (`hedge_after_ms`), over the backend's: `None` follows the
/// backend's policy, zero hedges nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HedgeDelay(pub Option<Duration>);

/// Whether a reply may come from, and go into, the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cacheable(pub bool);

/// This attempt's place among all the call's attempts, retries and hedges alike, from 1 (0 until
/// the attempt layer numbers it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttemptNumber(pub u32);

/// The attempts a call has made, shared by all of them: the attempt layer numbers each from it.
#[derive(Debug, Clone, Default)]
pub struct Attempts(Arc<AtomicU32>);

impl Attempts {
    /// Counts a new attempt; its number (1, 2, ...).
    pub fn next(&self) -> AttemptNumber {
        AttemptNumber(self.0.fetch_add(1, Relaxed) + 1)
    }

    /// Attempts made so far.
    pub fn made(&self) -> u32 {
        self.0.load(Relaxed)
    }
}

/// The endpoints a call's attempts went to, shared by all of them, so that a retry or a hedge
/// goes elsewhere when it can.
#[derive(Debug, Clone, Default)]
pub struct Tried(Arc<Mutex<Vec<u64>>>);

impl Tried {
    /// The endpoints tried so far.
    pub fn ids(&self) -> Vec<u64> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Notes that an attempt went to endpoint `id`.
    pub fn note(&self, id: u64) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(id);
    }
}

/// The aggregator's request: a message and every value a layer of its stack reads. Cloned for
/// each attempt (tower's retry needs its requests to clone; tonic's `http::Request` would not);
/// the clones share the call's [`Attempts`] and [`Tried`].
#[derive(Debug, Clone)]
pub struct Call<M> {
    pub message: M,
    deadline: Deadline,
    attempt_timeout: PerAttemptTimeout,
    try_: Try,
    hedge: IsHedge,
    hedge_delay: HedgeDelay,
    cacheable: Cacheable,
    attempt: AttemptNumber,
    attempts: Attempts,
    tried: Tried,
}

impl<M> Call<M> {
    /// The first try of a call of `message` that must end by `deadline`, each attempt bound by
    /// `attempt_timeout`; not cacheable, hedged as the backend's policy says.
    pub fn new(message: M, deadline: Instant, attempt_timeout: Duration) -> Self {
        Call {
            message,
            deadline: Deadline(deadline),
            attempt_timeout: PerAttemptTimeout(attempt_timeout),
            try_: Try::FIRST,
            hedge: IsHedge(false),
            hedge_delay: HedgeDelay(None),
            cacheable: Cacheable(false),
            attempt: AttemptNumber(0),
            attempts: Attempts::default(),
            tried: Tried::default(),
        }
    }

    /// With `cacheable` as whether the cache may answer it.
    pub fn cacheable(mut self, cacheable: bool) -> Self {
        self.cacheable = Cacheable(cacheable);
        self
    }

    /// With the request's own hedge delay.
    pub fn hedge_delay(mut self, delay: Option<Duration>) -> Self {
        self.hedge_delay = HedgeDelay(delay);
        self
    }
}

/// `Param<T>` for fields of `Call`...
macro_rules! params {
    ($($field:ident: $t:ty;)*) => {$(
        impl<M> Param<$t> for Call<M> {
            fn param(&self) -> $t {
                self.$field.clone()
            }
        }
    )*};
}

/// ...and `SetParam<T>` for those a layer sets.
macro_rules! set_params {
    ($($field:ident: $t:ty;)*) => {$(
        impl<M> SetParam<$t> for Call<M> {
            fn set_param(&mut self, value: $t) {
                self.$field = value;
            }
        }
    )*};
}

params! {
    deadline: Deadline;
    attempt_timeout: PerAttemptTimeout;
    try_: Try;
    hedge: IsHedge;
    hedge_delay: HedgeDelay;
    cacheable: Cacheable;
    attempt: AttemptNumber;
    attempts: Attempts;
    tried: Tried;
}

set_params! {
    deadline: Deadline;
    try_: Try;
    hedge: IsHedge;
    attempt: AttemptNumber;
}
