//! The backend's own series (docs/metrics.md): each `Fetch`'s duration by the way it waited and
//! its status, and the delay it drew. Series are resolved once per mode at start.

use std::sync::Arc;
use std::time::Duration;

use fanout_proto::v1::Mode;
use fanout_server::metrics::{ByCode, Durations, Registry, Timer, register_histograms};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;

const MODES: [Mode; 4] = [Mode::Async, Mode::Blocking, Mode::SpawnBlocking, Mode::Cpu];

/// See the module docs.
#[derive(Debug)]
pub struct FetchMetrics {
    /// By [`MODES`]' order.
    durations: [Arc<ByCode>; 4],
    delays: [Histogram; 4],
}

fn index(mode: Mode) -> usize {
    MODES.iter().position(|m| *m == mode).unwrap_or(0)
}

impl FetchMetrics {
    /// Registers the series, and `fanout_backend_info{name}` (1) so that a dashboard can tell
    /// backends apart by the name the aggregator calls them by.
    pub fn register(registry: &mut Registry, name: &str) -> Self {
        registry.register(
            "fanout_backend",
            "This backend's --name",
            Info::new(vec![("name", name.to_owned())]),
        );
        let durations = Durations::register(
            registry,
            "fanout_fetch_duration",
            "Duration of each Fetch, by the way it waited (mode) and its status",
        );
        let delays = register_histograms(
            registry,
            "fanout_fetch_delay",
            "The simulated delay each Fetch drew",
        );
        let mode = |m: Mode| vec![("mode", m.cli_name().to_owned())];
        FetchMetrics {
            durations: MODES.map(|m| Arc::new(durations.by_code(mode(m)))),
            delays: MODES.map(|m| delays.get_or_create(&mode(m)).clone()),
        }
    }

    /// A call will wait `delay` in `mode`.
    pub fn drew(&self, mode: Mode, delay: Duration) {
        self.delays[index(mode)].observe(delay.as_secs_f64());
    }

    /// Starts timing a call in `mode`; it counts as CANCELLED unless the timer is ended.
    pub fn start(&self, mode: Mode) -> Timer {
        self.durations[index(mode)].start()
    }
}
