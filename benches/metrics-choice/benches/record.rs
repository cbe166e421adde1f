//! Per-call recording cost of three Rust Prometheus libraries.
//!
//! One "record" = one histogram observation (latency buckets below) + one counter increment,
//! on handles resolved once up front (no label look-up per call), as a request path would do.
//!
//! Groups:
//! - `a_single_thread`: one thread recording. Timed in chunks of `CHUNK` records so that the
//!   `metrics` exporter's pending samples can be drained between chunks (untimed for
//!   `metrics_record_only`, timed for `metrics_incl_drain`).
//! - `b_two_threads`: two std threads recording to the same handles at once; the figure is
//!   wall time / records done by ONE thread, i.e. what each caller pays per record while the
//!   other thread records too (aggregate throughput is twice that rate).
//! - `c_render`: the text exposition of 20 label sets of the histogram and of the counter.
//!
//! `noop_*` runs the same harness with an empty record (the value pick only), to show the
//! harness's own cost.

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// Upper bounds in seconds, as the issue asks.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Records per timed chunk in the single-thread group.
const CHUNK: u64 = 4096;

/// 64 observed values spread over the buckets (and past the last one), cycled through, so the
/// bucket search is not always the first or the last bucket. Same for every candidate.
fn values() -> [f64; 64] {
    let mut v = [0.0; 64];
    for (i, x) in v.iter_mut().enumerate() {
        // 0.0001 s .. ~20 s, log-spaced
        *x = 0.0001 * 10f64.powf(i as f64 * 5.3 / 63.0);
    }
    v
}

/// 20 label sets: 10 routes x 2 outcomes. Index 0 is the one recorded to in (a) and (b).
fn label_sets() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for r in 0..10 {
        for outcome in ["ok", "error"] {
            out.push((format!("/fanout.v1.Aggregator/Method{r}"), outcome.to_string()));
        }
    }
    out
}

/// Something that records one call's histogram observation + counter increment.
trait Recorder: Sync {
    fn record(&self, v: f64);
    /// Work owed at scrape time for what was recorded (only `metrics` has any).
    fn drain(&self) {}
}

// ---------------------------------------------------------------- prometheus-client
mod pc {
    use prometheus_client::encoding::text::encode;
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::histogram::Histogram;
    use prometheus_client::registry::Registry;

    type Labels = Vec<(String, String)>;

    pub struct Pc {
        pub registry: Registry,
        pub hist: Histogram,
        pub counter: Counter,
    }

    fn new_hist() -> Histogram {
        Histogram::new(super::BUCKETS)
    }

    pub fn new() -> Pc {
        let mut registry = Registry::default();
        let hists = Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(new_hist);
        let counters = Family::<Labels, Counter>::default();
        registry.register("fanout_call_duration_seconds", "Call latency", hists.clone());
        // prometheus-client appends `_total` to counters itself
        registry.register("fanout_calls", "Calls", counters.clone());
        let sets = super::label_sets();
        let mut first = None;
        for (i, (route, outcome)) in sets.iter().enumerate() {
            let l: Labels = vec![("route".into(), route.clone()), ("outcome".into(), outcome.clone())];
            // resolved once, the handle held (Histogram/Counter are Arc inside)
            let h = hists.get_or_create(&l).clone();
            let c = counters.get_or_create(&l).clone();
            h.observe(0.01 * i as f64);
            c.inc();
            if first.is_none() {
                first = Some((h, c));
            }
        }
        let (hist, counter) = first.unwrap();
        Pc { registry, hist, counter }
    }

    impl super::Recorder for Pc {
        #[inline]
        fn record(&self, v: f64) {
            self.hist.observe(v);
            self.counter.inc();
        }
    }

    pub fn render(p: &Pc) -> String {
        let mut s = String::new();
        encode(&mut s, &p.registry).unwrap();
        s
    }
}

// ---------------------------------------------------------------- prometheus (tikv)
mod tikv {
    use prometheus::{
        Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
        TextEncoder,
    };

    pub struct Tikv {
        pub registry: Registry,
        pub hist: Histogram,
        pub counter: IntCounter,
    }

    pub fn new() -> Tikv {
        let registry = Registry::new();
        let hists = HistogramVec::new(
            HistogramOpts::new("fanout_call_duration_seconds", "Call latency")
                .buckets(super::BUCKETS.to_vec()),
            &["route", "outcome"],
        )
        .unwrap();
        let counters =
            IntCounterVec::new(Opts::new("fanout_calls_total", "Calls"), &["route", "outcome"]).unwrap();
        registry.register(Box::new(hists.clone())).unwrap();
        registry.register(Box::new(counters.clone())).unwrap();
        let mut first = None;
        for (i, (route, outcome)) in super::label_sets().iter().enumerate() {
            let h = hists.with_label_values(&[route.as_str(), outcome.as_str()]);
            let c = counters.with_label_values(&[route.as_str(), outcome.as_str()]);
            h.observe(0.01 * i as f64);
            c.inc();
            if first.is_none() {
                first = Some((h, c));
            }
        }
        let (hist, counter) = first.unwrap();
        Tikv { registry, hist, counter }
    }

    impl super::Recorder for Tikv {
        #[inline]
        fn record(&self, v: f64) {
            self.hist.observe(v);
            self.counter.inc();
        }
    }

    pub fn render(t: &Tikv, buf: &mut Vec<u8>) -> usize {
        buf.clear();
        TextEncoder::new().encode(&t.registry.gather(), buf).unwrap();
        buf.len()
    }
}

// ---------------------------------------------------------------- metrics + exporter
mod mx {
    use metrics::{Counter, Histogram, Key, Label, Level, Metadata, Recorder as _};
    use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};

    pub struct Mx {
        // kept alive; not installed globally
        pub _recorder: PrometheusRecorder,
        pub handle: PrometheusHandle,
        pub hist: Histogram,
        pub counter: Counter,
    }

    pub fn new() -> Mx {
        let recorder = PrometheusBuilder::new().set_buckets(&super::BUCKETS).unwrap().build_recorder();
        let handle = recorder.handle();
        let meta = Metadata::new(module_path!(), Level::INFO, Some(module_path!()));
        let mut first = None;
        for (i, (route, outcome)) in super::label_sets().into_iter().enumerate() {
            let labels = vec![Label::new("route", route), Label::new("outcome", outcome)];
            let hk = Key::from_parts("fanout_call_duration_seconds", labels.clone());
            let ck = Key::from_parts("fanout_calls_total", labels);
            let h = recorder.register_histogram(&hk, &meta);
            let c = recorder.register_counter(&ck, &meta);
            h.record(0.01 * i as f64);
            c.increment(1);
            if first.is_none() {
                first = Some((h, c));
            }
        }
        handle.run_upkeep();
        let (hist, counter) = first.unwrap();
        Mx { _recorder: recorder, handle, hist, counter }
    }

    impl super::Recorder for Mx {
        #[inline]
        fn record(&self, v: f64) {
            self.hist.record(v);
            self.counter.increment(1);
        }
        fn drain(&self) {
            // what render() does first: move pending raw samples into the bucketed histograms
            self.handle.run_upkeep();
        }
    }
}

/// Empty record: harness cost only.
struct Noop;
impl Recorder for Noop {
    #[inline]
    fn record(&self, v: f64) {
        black_box(v);
    }
}

/// Single thread, timed in chunks; `drain` between chunks is timed only if `time_drain`.
fn single<R: Recorder>(r: &R, iters: u64, time_drain: bool) -> Duration {
    let vals = values();
    let mut total = Duration::ZERO;
    let mut done = 0u64;
    let mut i = 0usize;
    while done < iters {
        let n = CHUNK.min(iters - done);
        let t = Instant::now();
        for _ in 0..n {
            r.record(black_box(vals[i & 63]));
            i = i.wrapping_add(1);
        }
        if time_drain {
            r.drain();
            total += t.elapsed();
        } else {
            total += t.elapsed();
            r.drain();
        }
        done += n;
    }
    total
}

/// Two threads each doing `iters` records on the same handles; wall time from a common start.
fn two_threads<R: Recorder>(r: &R, iters: u64, time_drain: bool) -> Duration {
    let barrier = Barrier::new(3);
    let start = std::thread::scope(|s| {
        for t in 0..2usize {
            let barrier = &barrier;
            s.spawn(move || {
                let vals = values();
                let mut i = t * 17;
                barrier.wait();
                for _ in 0..iters {
                    r.record(black_box(vals[i & 63]));
                    i = i.wrapping_add(1);
                }
            });
        }
        barrier.wait();
        Instant::now()
    });
    if time_drain {
        r.drain();
        start.elapsed()
    } else {
        let e = start.elapsed();
        r.drain();
        e
    }
}

fn bench_single(c: &mut Criterion) {
    let mut g = c.benchmark_group("a_single_thread");
    let noop = Noop;
    g.bench_function("noop_harness", |b| b.iter_custom(|n| single(&noop, n, false)));
    let p = pc::new();
    g.bench_function("prometheus_client", |b| b.iter_custom(|n| single(&p, n, false)));
    let t = tikv::new();
    g.bench_function("prometheus_tikv", |b| b.iter_custom(|n| single(&t, n, false)));
    let m = mx::new();
    g.bench_function("metrics_record_only", |b| b.iter_custom(|n| single(&m, n, false)));
    let m = mx::new();
    g.bench_function("metrics_incl_drain", |b| b.iter_custom(|n| single(&m, n, true)));
    g.finish();
}

fn bench_two(c: &mut Criterion) {
    let mut g = c.benchmark_group("b_two_threads");
    let noop = Noop;
    g.bench_function("noop_harness", |b| b.iter_custom(|n| two_threads(&noop, n, false)));
    let p = pc::new();
    g.bench_function("prometheus_client", |b| b.iter_custom(|n| two_threads(&p, n, false)));
    let t = tikv::new();
    g.bench_function("prometheus_tikv", |b| b.iter_custom(|n| two_threads(&t, n, false)));
    let m = mx::new();
    g.bench_function("metrics_record_only", |b| b.iter_custom(|n| two_threads(&m, n, false)));
    let m = mx::new();
    g.bench_function("metrics_incl_drain", |b| b.iter_custom(|n| two_threads(&m, n, true)));
    g.finish();
}

fn bench_render(c: &mut Criterion) {
    let mut g = c.benchmark_group("c_render_20_label_sets");
    let p = pc::new();
    let t = tikv::new();
    let m = mx::new();
    // sanity: all three expose 20 histogram series and 20 counter series
    for (name, text) in [
        ("prometheus_client", pc::render(&p)),
        ("prometheus_tikv", {
            let mut b = Vec::new();
            tikv::render(&t, &mut b);
            String::from_utf8(b).unwrap()
        }),
        ("metrics", m.handle.render()),
    ] {
        let h = text.lines().filter(|l| l.starts_with("fanout_call_duration_seconds_count")).count();
        let c = text.lines().filter(|l| l.starts_with("fanout_calls_total{")).count();
        let buckets = text.lines().filter(|l| l.starts_with("fanout_call_duration_seconds_bucket")).count();
        eprintln!("{name}: {} bytes, {h} histogram series ({buckets} bucket lines), {c} counter series", text.len());
        assert_eq!((h, c, buckets), (20, 20, 20 * 15), "{name} exposition:\n{text}");
    }
    g.bench_function("prometheus_client", |b| b.iter(|| pc::render(&p)));
    let mut buf = Vec::new();
    g.bench_function("prometheus_tikv", |b| b.iter(|| tikv::render(&t, &mut buf)));
    // no samples pending: the draining of pending samples is counted in metrics_incl_drain above
    g.bench_function("metrics", |b| b.iter(|| m.handle.render()));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1))
        .without_plots()
}

criterion_group! { name = benches; config = config(); targets = bench_single, bench_two, bench_render }
criterion_main!(benches);
