//! Writing what is read at scrape time: gauges and counters whose values the servers keep anyway
//! (atomics), encoded when Prometheus scrapes, by a [`Collector`](prometheus_client::collector::Collector).

use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeLabelSet, EncodeMetric,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Writes one unlabelled gauge.
pub fn gauge(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue + Send + Sync + std::fmt::Debug,
) -> std::fmt::Result {
    let g = ConstGauge::new(value);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

/// Writes one unlabelled counter (`_total` is appended to `name`).
pub fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeCounterValue + Send + Sync + std::fmt::Debug,
) -> std::fmt::Result {
    let c = ConstCounter::new(value);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

/// Writes a family of gauges, a row per label set.
pub fn gauges<L, V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> std::fmt::Result
where
    L: EncodeLabelSet,
    V: EncodeGaugeValue + Send + Sync + std::fmt::Debug,
{
    family(e, name, help, MetricType::Gauge, rows, ConstGauge::new)
}

/// Writes a family of counters, a row per label set (`_total` is appended to `name`).
pub fn counters<L, V>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    rows: impl IntoIterator<Item = (L, V)>,
) -> std::fmt::Result
where
    L: EncodeLabelSet,
    V: EncodeCounterValue + Send + Sync + std::fmt::Debug,
{
    family(e, name, help, MetricType::Counter, rows, ConstCounter::new)
}

/// A family of `kind`, a row per label set, each value made a metric by `metric`.
fn family<L, V, M>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: impl IntoIterator<Item = (L, V)>,
    metric: impl Fn(V) -> M,
) -> std::fmt::Result
where
    L: EncodeLabelSet,
    M: EncodeMetric,
{
    let mut family = e.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        metric(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}
