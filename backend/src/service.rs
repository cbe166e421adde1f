//! The `fanout.v1.Backend` service: decide how long and how to wait, wait, then answer or fail.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanout_proto::limits;
use fanout_proto::v1::backend_server::Backend;
use fanout_proto::v1::{FetchReply, FetchRequest, Mode, ServerStats, StatsRequest};
use fanout_server::Counters;
use fanout_server::deadline::grpc_timeout;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::Semaphore;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::Config;
use crate::metrics::FetchMetrics;

/// The backend service; cheap to share, all state behind `Arc`s.
#[derive(Debug)]
pub struct BackendService {
    config: Config,
    counters: Arc<Counters>,
    /// With `--seed`, one seeded generator drawn in arrival order; otherwise per-thread entropy.
    seeded: Option<Mutex<StdRng>>,
    /// `--mode cpu` runs on at most one thread per core.
    cpu_pool: Semaphore,
    /// `--capacity`: the calls worked on at once; the rest wait their turn, in order.
    capacity: Option<Semaphore>,
    /// With `--metrics-listen`: what each call drew and how long it took.
    metrics: Option<FetchMetrics>,
}

/// What one call will do.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Simulation {
    delay: Duration,
    fail: bool,
    mode: Mode,
}

impl BackendService {
    pub fn new(config: Config, counters: Arc<Counters>) -> Self {
        let seeded = config.seed.map(|s| Mutex::new(StdRng::seed_from_u64(s)));
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Self {
            counters,
            seeded,
            cpu_pool: Semaphore::new(cores),
            capacity: config.capacity.map(Semaphore::new),
            metrics: None,
            config,
        }
    }

    /// Records each call's delay and duration in `registry`'s series (`--metrics-listen`).
    pub fn with_metrics(mut self, registry: &mut fanout_server::metrics::Registry) -> Self {
        self.metrics = Some(FetchMetrics::register(registry, &self.config.name));
        self
    }

    /// Draws a latency and whether to fail, from the seeded generator if there is one.
    fn draw(&self) -> (Duration, bool) {
        let roll = |rng: &mut dyn rand::RngCore| {
            let delay = self.config.latency.sample(rng);
            let fail = self.config.fail_rate > 0.0 && rng.random_bool(self.config.fail_rate);
            (delay, fail)
        };
        match &self.seeded {
            // A poisoned lock only means another call panicked mid-draw; the generator is fine.
            Some(rng) => roll(&mut *rng.lock().unwrap_or_else(|p| p.into_inner())),
            None => roll(&mut rand::rng()),
        }
    }

    /// Checks the request and works out what this call will do.
    fn plan(&self, req: &FetchRequest) -> Result<Simulation, Status> {
        limits::query(&req.query).map_err(invalid)?;
        let overrides = req.delay_ms.is_some() || req.fail.is_some() || req.mode.is_some();
        if overrides && !self.config.allow_overrides {
            return Err(Status::permission_denied(format!(
                "backend {}: per-request overrides (delay_ms, fail, mode) are disabled; \
                 start the backend with --allow-overrides to use them",
                self.config.name
            )));
        }
        limits::delay_ms(req.delay_ms).map_err(invalid)?;
        let mode = limits::mode(req.mode)
            .map_err(invalid)?
            .unwrap_or(self.config.mode);
        let (drawn, drawn_fail) = self.draw();
        Ok(Simulation {
            delay: req
                .delay_ms
                .map_or(drawn, |ms| Duration::from_millis(ms.into())),
            fail: req.fail.unwrap_or(drawn_fail),
            mode,
        })
    }
}

/// A request that breaks a limit: `INVALID_ARGUMENT`, with what is wrong.
fn invalid(e: limits::Invalid) -> Status {
    Status::invalid_argument(e.0)
}

/// Waits out `delay` in the way `mode` says. This is the part fanout exists to compare.
async fn wait(mode: Mode, delay: Duration, cpu_pool: &Semaphore) -> Result<(), Status> {
    match mode {
        // A zero delay is no wait at all: not even a timer (raw-capacity benchmarks use it).
        _ if delay.is_zero() => {}
        // Not tokio::time::sleep, whose millisecond ticks add about 1 ms to every wait (see timer).
        Mode::Async | Mode::Unspecified => fanout_timer::sleep(delay).await,
        // On purpose: this blocks the async worker thread that is running this call, so no other
        // task can run on it meanwhile.
        Mode::Blocking => std::thread::sleep(delay),
        // Work handed to the blocking pool runs to completion even if the caller leaves, as a
        // real blocking call would.
        Mode::SpawnBlocking => tokio::task::spawn_blocking(move || std::thread::sleep(delay))
            .await
            .map_err(pool_failed)?,
        Mode::Cpu => {
            // One thread per core, like ProcessPoolExecutor: more threads than cores would only
            // time-slice. Waiting for a thread is async, so the runtime stays free meanwhile.
            let _thread = cpu_pool
                .acquire()
                .await
                .map_err(|_| Status::unavailable("shutting down"))?;
            // If the caller leaves, this future is dropped and the guard stops the burn: nobody
            // wants the answer any more.
            let stop = Arc::new(AtomicBool::new(false));
            let _stop_on_drop = StopOnDrop(stop.clone());
            tokio::task::spawn_blocking(move || burn_cpu(delay, &stop))
                .await
                .map_err(pool_failed)?;
        }
    }
    Ok(())
}

fn pool_failed(e: tokio::task::JoinError) -> Status {
    Status::internal(format!("blocking-pool task failed: {e}"))
}

/// Sets the flag when dropped: a CPU burn still running then stops (after a normal finish it is
/// already over, and the flag changes nothing).
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Spends `cpu` of this thread's CPU time (not wall time) computing, unless `stop` is set
/// first: with more such calls than cores, each takes longer, as CPU-bound work does.
fn burn_cpu(cpu: Duration, stop: &AtomicBool) {
    let start_cpu = cpu_time::ThreadTime::try_now().ok();
    let start_wall = std::time::Instant::now();
    let spent = || match &start_cpu {
        Some(t) => t.try_elapsed().unwrap_or_else(|_| start_wall.elapsed()),
        None => start_wall.elapsed(),
    };
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    while spent() < cpu && !stop.load(Ordering::Relaxed) {
        for _ in 0..2_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        }
    }
    std::hint::black_box(x);
}

#[tonic::async_trait]
impl Backend for BackendService {
    async fn fetch(&self, req: Request<FetchRequest>) -> Result<Response<FetchReply>, Status> {
        let guard = self.counters.start_call();
        let caller_timeout = grpc_timeout(&req);
        let req = req.into_inner();
        let result = match self.plan(&req) {
            Ok(plan) => {
                let timing = self.metrics.as_ref().map(|m| {
                    m.drew(plan.mode, plan.delay);
                    m.start(plan.mode)
                });
                let result = self.serve(req, plan, caller_timeout).await;
                if let Some(t) = timing {
                    t.end(
                        result
                            .as_ref()
                            .map_or_else(Status::code, |_| tonic::Code::Ok)
                            as i32,
                    );
                }
                result
            }
            Err(status) => Err(status),
        };
        guard.finish(result.is_ok());
        if let Err(status) = &result {
            fanout_telemetry::propagation::set_error(&tracing::Span::current(), status.message());
        }
        result.map(Response::new)
    }

    async fn stats(&self, _: Request<StatsRequest>) -> Result<Response<ServerStats>, Status> {
        Ok(Response::new(self.counters.snapshot(&self.config.name)))
    }
}

impl BackendService {
    async fn serve(
        &self,
        req: FetchRequest,
        plan: Simulation,
        caller_timeout: Option<Duration>,
    ) -> Result<FetchReply, Status> {
        let span = tracing::info_span!(
            "wait",
            otel.name = format!("wait {} {}ms", plan.mode.cli_name(), plan.delay.as_millis()),
            mode = plan.mode.cli_name(),
            delay_ms = plan.delay.as_millis() as u64,
        );
        // With a capacity, a call waits its turn before its latency starts, as at a server with
        // that many workers (or a database with that many connections): past N/L calls a
        // second, latency grows with the line. Semaphore permits go first come, first served.
        let _turn = match &self.capacity {
            Some(pool) => Some(
                pool.acquire()
                    .instrument(tracing::info_span!("queue"))
                    .await
                    .map_err(|_| Status::unavailable("shutting down"))?,
            ),
            None => None,
        };
        wait(plan.mode, plan.delay, &self.cpu_pool)
            .instrument(span)
            .await?;
        let name = &self.config.name;
        if plan.fail {
            return Err(Status::unavailable(format!(
                "backend {name}: simulated failure after {}ms (fail-rate {})",
                plan.delay.as_millis(),
                self.config.fail_rate
            )));
        }
        Ok(FetchReply {
            backend: name.clone(),
            payload: format!("{name} result for {:?}", req.query),
            query: req.query,
            delay_ms: plan.delay.as_millis() as u32,
            mode: plan.mode.into(),
            grpc_timeout_ms: caller_timeout.map(|d| d.as_millis().min(u32::MAX as u128) as u32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(allow_overrides: bool) -> BackendService {
        let config = Config {
            allow_overrides,
            seed: Some(1),
            ..Config::default()
        };
        BackendService::new(config, Arc::default())
    }

    #[test]
    fn overrides_are_gated_and_bounded() {
        let ask = |delay_ms| FetchRequest {
            delay_ms: Some(delay_ms),
            ..Default::default()
        };
        let err = service(false).plan(&ask(10)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("--allow-overrides"));

        let err = service(true).plan(&ask(36_000_000)).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("delay_ms 36000000"));

        let plan = service(true).plan(&ask(10)).unwrap();
        assert_eq!(plan.delay, Duration::from_millis(10));
    }

    #[test]
    fn unknown_modes_are_invalid() {
        let req = FetchRequest {
            mode: Some(99),
            ..Default::default()
        };
        let err = service(true).plan(&req).unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("mode 99"));
    }

    #[test]
    fn seeded_draws_repeat() {
        let config = Config {
            latency: "uniform:1ms..100ms".parse().unwrap(),
            fail_rate: 0.5,
            seed: Some(42),
            ..Config::default()
        };
        let a = BackendService::new(config.clone(), Arc::default());
        let b = BackendService::new(config, Arc::default());
        let draws = |s: &BackendService| (0..50).map(|_| s.draw()).collect::<Vec<_>>();
        assert_eq!(draws(&a), draws(&b));
    }

    #[test]
    fn cpu_mode_spends_cpu_time() {
        let t = cpu_time::ThreadTime::now();
        burn_cpu(Duration::from_millis(30), &AtomicBool::new(false));
        assert!(t.elapsed() >= Duration::from_millis(30));
        let t = std::time::Instant::now();
        burn_cpu(Duration::from_secs(10), &AtomicBool::new(true));
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "a stopped burn still ran"
        );
    }
}
