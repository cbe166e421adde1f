//! One backend's part of an aggregate call: the cache, a concurrency slot, attempts bounded by
//! their own timeout and by the call's deadline (sent along as `grpc-timeout`), and retries with
//! backoff while the policy, the budget and the deadline all allow.

use std::sync::Arc;

use fanout_proto::v1::{BackendResult, FetchReply, FetchRequest, backend_result::Outcome};
use fanout_server::Counters;
use fanout_telemetry::propagation;
use tokio::time::{Instant, sleep, timeout};
use tonic::Code;
use tower::retry::budget::{Budget, TpsBudget};
use tracing::Instrument;

use crate::backends::BackendHandle;
use crate::cache::Cache;
use crate::error::CallError;
use crate::request::Plan;
use crate::retry::RetryPolicy;
use fanout_proto::limits::MIN_TIMEOUT;

/// What every backend call of this aggregator shares.
#[derive(Debug)]
pub struct CallContext {
    pub retry: RetryPolicy,
    pub budget: TpsBudget,
    pub cache: Option<Cache>,
    pub counters: Arc<Counters>,
}

/// Calls one backend for `plan`; never fails: a failure is the result's `failure`. Traced as a
/// `backend` span (a child of the current span) with one `attempt` span per attempt.
pub async fn call_backend(
    ctx: &CallContext,
    backend: &BackendHandle,
    plan: &Plan,
) -> BackendResult {
    let span = tracing::info_span!(
        "backend",
        otel.name = format!("backend {}", backend.name),
        backend = backend.name,
        attempts = tracing::field::Empty,
        outcome = tracing::field::Empty,
        from_cache = tracing::field::Empty,
    );
    let result = traced_call(ctx, backend, plan)
        .instrument(span.clone())
        .await;
    span.record("attempts", result.attempts);
    span.record("from_cache", result.from_cache);
    match &result.outcome {
        Some(Outcome::Failure(f)) => {
            span.record("outcome", f.code_name.as_str());
            propagation::set_error(&span, f.message.clone());
        }
        _ => {
            span.record("outcome", "OK");
        }
    }
    result
}

async fn traced_call(ctx: &CallContext, backend: &BackendHandle, plan: &Plan) -> BackendResult {
    let cache = ctx.cache.as_ref().filter(|_| plan.use_cache);
    if let Some(reply) = cache.and_then(|c| c.get(&backend.name, &plan.query)) {
        Counters::bump(&ctx.counters.cache_hits);
        return result(backend, plan, Outcome::Reply(reply), 0, true);
    }
    if plan.deadline.saturating_duration_since(Instant::now()) < MIN_TIMEOUT {
        let err = CallError::Deadline {
            when: "before this backend's turn came",
        };
        return not_called(backend, plan, &err);
    }
    let (outcome, attempts) = with_retries(ctx, backend, plan).await;
    let outcome = match outcome {
        Ok(reply) => {
            if let Some(c) = cache {
                c.insert(&backend.name, &plan.query, reply.clone());
            }
            Outcome::Reply(reply)
        }
        Err(failure) => Outcome::Failure(failure),
    };
    result(backend, plan, outcome, attempts, false)
}

/// A backend's result for a plan that never got to call it (its deadline passed first).
pub fn not_called(backend: &BackendHandle, plan: &Plan, err: &CallError) -> BackendResult {
    let failure = err.to_failure(&backend.name, None);
    result(backend, plan, Outcome::Failure(failure), 0, false)
}

fn result(
    backend: &BackendHandle,
    plan: &Plan,
    outcome: Outcome,
    attempts: u32,
    from_cache: bool,
) -> BackendResult {
    BackendResult {
        backend: backend.name.clone(),
        outcome: Some(outcome),
        attempts,
        latency_ms: plan.started.elapsed().as_secs_f64() * 1e3,
        from_cache,
    }
}

/// Attempts until one succeeds or retrying stops; returns the outcome and the attempts made.
async fn with_retries(
    ctx: &CallContext,
    backend: &BackendHandle,
    plan: &Plan,
) -> (Result<FetchReply, fanout_proto::v1::Failure>, u32) {
    ctx.budget.deposit();
    let mut attempt = 0;
    let mut backoff_ms = 0.0;
    loop {
        attempt += 1;
        let span = tracing::info_span!(
            "attempt",
            otel.name = format!("attempt {attempt}"),
            attempt,
            backoff_ms,
            outcome = tracing::field::Empty,
        );
        let outcome = one_attempt(ctx, backend, plan, attempt)
            .instrument(span.clone())
            .await;
        let err = match outcome {
            Ok(reply) => {
                span.record("outcome", "OK");
                return (Ok(reply), attempt);
            }
            Err(err) => {
                span.record("outcome", fanout_proto::code_name(err.code()));
                propagation::set_error(&span, err.to_string());
                err
            }
        };
        let stopped = if !err.retryable() {
            None
        } else if attempt >= ctx.retry.max_attempts {
            Some(format!("gave up after {attempt} attempts (--max-attempts)"))
        } else {
            let backoff = ctx.retry.backoff(attempt, &mut rand::rng());
            if Instant::now() + backoff + MIN_TIMEOUT > plan.deadline {
                Some(format!(
                    "no time left for attempt {} before the deadline",
                    attempt + 1
                ))
            } else if !ctx.budget.withdraw() {
                Counters::bump(&ctx.counters.retries_throttled);
                Some("not retried: the retry budget is spent (--retry-budget)".to_owned())
            } else {
                Counters::bump(&ctx.counters.retries);
                tracing::debug!(backend = backend.name, attempt, ?backoff, error = %err, "retrying");
                backoff_ms = backoff.as_secs_f64() * 1e3;
                sleep(backoff).await;
                continue;
            }
        };
        return (
            Err(err.to_failure(&backend.name, stopped.as_deref())),
            attempt,
        );
    }
}

/// One attempt: wait for a slot, then call with the smaller of the attempt timeout and what is
/// left of the deadline, both enforced here and sent to the backend as `grpc-timeout`.
async fn one_attempt(
    ctx: &CallContext,
    backend: &BackendHandle,
    plan: &Plan,
    attempt: u32,
) -> Result<FetchReply, CallError> {
    let left = plan.deadline.saturating_duration_since(Instant::now());
    if left < MIN_TIMEOUT {
        return Err(CallError::Deadline {
            when: "before this attempt could start",
        });
    }
    // Time queued for a slot counts against the deadline.
    let _slot = match timeout(left, backend.slots.clone().acquire_owned()).await {
        Ok(Ok(slot)) => slot,
        Ok(Err(_closed)) => {
            return Err(CallError::Status(tonic::Status::unavailable(
                "shutting down",
            )));
        }
        Err(_) => {
            return Err(CallError::NoSlot {
                limit: backend.slot_count,
            });
        }
    };
    let left = plan.deadline.saturating_duration_since(Instant::now());
    if left < MIN_TIMEOUT {
        return Err(CallError::Deadline {
            when: "while waiting for a concurrency slot",
        });
    }
    let limit = plan.attempt_timeout.min(left);
    // Whether this attempt is bounded by its own timeout (so a timeout may be retried) or by the
    // call's deadline (so nothing more can be done).
    let own_timeout = plan.attempt_timeout < left;
    let timed_out = || {
        if own_timeout {
            CallError::AttemptTimeout {
                attempt,
                after: limit,
            }
        } else {
            CallError::Deadline {
                when: "during the attempt",
            }
        }
    };

    let req = FetchRequest {
        query: plan.query.clone(),
        delay_ms: plan.delay_ms,
        fail: plan.fail,
        mode: plan.mode.map(Into::into),
    };
    Counters::bump(&ctx.counters.backend_attempts);
    let started = Instant::now();
    // The deadline goes along as grpc-timeout, and the backend's server span becomes a child
    // of this attempt's span.
    let span = tracing::Span::current();
    let call = backend.channel.fetch(&req, limit, &span);
    match timeout(limit, call).await {
        Ok(Ok(reply)) => Ok(reply),
        // A backend that gives up at the grpc-timeout we sent answers CANCELLED or
        // DEADLINE_EXCEEDED a moment before our own timer fires: that is this attempt's timeout.
        Ok(Err(status))
            if matches!(status.code(), Code::Cancelled | Code::DeadlineExceeded)
                && started.elapsed() + MIN_TIMEOUT >= limit =>
        {
            Err(timed_out())
        }
        // A connection that could not be opened, or broke or closed under the call, is
        // UNAVAILABLE (retryable) with the reason in its message.
        Ok(Err(status)) => Err(CallError::Status(status)),
        Err(_elapsed) => Err(timed_out()),
    }
}
