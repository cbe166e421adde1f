//! Logs and traces for the binaries.
//!
//! - Logs: `RUST_LOG`-style filtering, text or JSON lines on stderr.
//! - Traces: when an OTLP endpoint is given (`OTEL_EXPORTER_OTLP_ENDPOINT`), spans go there over
//!   OTLP/gRPC (Jaeger v2 takes it on 4317); otherwise nothing is exported. Spans leave through
//!   the SDK's batch processor: a bounded queue drained by its own thread, so a dead or slow
//!   collector never blocks serving. When the queue is full, spans are dropped and counted, and
//!   the count is logged at shutdown. [`Telemetry::shutdown`] flushes within a bounded time.
//! - W3C `traceparent` is the propagation format (see [`propagation`]).
#![forbid(unsafe_code)]

pub mod propagation;

use std::io::IsTerminal;
use std::time::Duration;

use clap::{Args, ValueEnum};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How long shutdown may take to flush the spans still queued.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one export may take before the batch is given up on.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(3);
/// Spans queued for export at most; past it they are dropped (and counted), never waited for.
const QUEUE: usize = 4096;

/// How log lines look.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Logging and tracing flags, shared by the servers.
#[derive(Debug, Clone, Args)]
pub struct TelemetryArgs {
    /// Log line format (filter with RUST_LOG, e.g. RUST_LOG=debug for a line per call).
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Export traces over OTLP/gRPC to this collector, e.g. http://jaeger:4317. Unset: no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,

    /// The service.name traces carry [default: the server's own, e.g. aggregator].
    #[arg(long, env = "OTEL_SERVICE_NAME")]
    pub service_name: Option<String>,

    /// Share of new traces to record, 0 to 1 [default: 1 for servers, 0.01 for loadgen]. A call
    /// that arrives with a traceparent follows its caller's decision.
    #[arg(long, env = "OTEL_TRACES_SAMPLER_ARG", value_parser = parse_ratio)]
    pub trace_ratio: Option<f64>,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!(
            "`{s}` is not a ratio from 0 to 1, e.g. `0.01` for 1% of traces"
        )),
    }
}

/// What [`init`] set up; call [`Telemetry::shutdown`] before exiting to flush spans.
#[derive(Debug)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Flushes queued spans (bounded by a few seconds) and stops exporting.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown_with_timeout(FLUSH_TIMEOUT)
        {
            tracing::warn!("could not flush all spans at shutdown: {e}");
        }
    }
}

fn text_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
}

fn json_layer<S>() -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .json()
        .with_writer(std::io::stderr)
}

/// Installs logging and, with an endpoint, trace export named `default_service` (unless
/// `--service-name` says otherwise). With an endpoint, call it inside a tokio runtime: the
/// exporter's channel lives there.
pub fn init(args: &TelemetryArgs, default_service: &str) -> Result<Telemetry, String> {
    init_with(args, default_service, "info", 1.0)
}

/// Like [`init`], with the log filter used when `RUST_LOG` is unset and the share of new traces
/// recorded when `--trace-ratio` is unset.
pub fn init_with(
    args: &TelemetryArgs,
    default_service: &str,
    default_log_filter: &str,
    default_ratio: f64,
) -> Result<Telemetry, String> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    // Log lines are events only: giving the log layer the spans too would make every call pay
    // for span bookkeeping even when no trace is exported. Spans exist only for the exporter.
    let log_filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(default_log_filter))
        .and(filter_fn(|meta| meta.is_event()));
    let logs = match args.log_format {
        LogFormat::Text => text_layer().with_filter(log_filter).boxed(),
        LogFormat::Json => json_layer().with_filter(log_filter).boxed(),
    };
    let Some(endpoint) = &args.otlp_endpoint else {
        tracing_subscriber::registry().with(logs).init();
        return Ok(Telemetry { provider: None });
    };

    let service = args
        .service_name
        .clone()
        .unwrap_or_else(|| default_service.to_owned());
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("cannot set up OTLP export to {endpoint}: {e}"))?;
    let batch = BatchSpanProcessor::builder(exporter)
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUE)
                .with_scheduled_delay(Duration::from_secs(1))
                .build(),
        )
        .build();
    let ratio = args.trace_ratio.unwrap_or(default_ratio);
    let provider = SdkTracerProvider::builder()
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .with_span_processor(batch)
        .with_resource(
            Resource::builder()
                .with_service_name(service.clone())
                .build(),
        )
        .build();
    let tracer = provider.tracer("fanout");
    // Spans for export: info and above from our own crates, whatever RUST_LOG says for logs.
    let trace_filter =
        EnvFilter::new("info,h2=off,hyper=off,tonic=off,tower=off,opentelemetry=off");
    tracing_subscriber::registry()
        .with(logs)
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(trace_filter),
        )
        .init();
    tracing::info!(endpoint, service, ratio, "exporting traces over OTLP");
    Ok(Telemetry {
        provider: Some(provider),
    })
}
