//! The end-to-end tests, over real gRPC on loopback: one test binary, a module per behaviour.
//!
//! One binary rather than one per file: a build for the tests links it once (each linked test
//! binary of this workspace is ~100 MB, and linking them was most of a first `cargo test`).
//! Tests run on the harness's threads as before (one per core); a module whose tests must not
//! share the machine with each other says so with a lock of its own.
//!
//! Run one behaviour with a filter on its module: `cargo test -p fanout-tests aggregator_hedging`.

mod aggregator_adaptive_limits;
mod aggregator_backend_peers;
mod aggregator_bad_input;
mod aggregator_cache;
mod aggregator_cancellation;
mod aggregator_concurrency;
mod aggregator_deadlines;
mod aggregator_hedging;
mod aggregator_limits;
mod aggregator_partial_failure;
mod aggregator_replicas;
mod aggregator_retries;
mod aggregator_streaming;
mod backend_blocking;
mod backend_capacity;
mod backend_failures;
mod backend_health;
mod backend_latency;
mod backend_modes;
mod backend_overrides;
mod backend_stats;
mod docs;
mod hostile_clients;
mod metrics;
mod reliability_blocking;
mod reliability_cancellation;
mod reliability_dead_backend;
mod reliability_flaky;
mod reliability_overload;
mod reliability_shutdown;
mod reliability_silent_backend;
mod stall_cancellation;
mod tls;
mod tls_files;
mod traces;
