//! A real OTLP trace receiver: a tonic server of the OpenTelemetry collector's `TraceService`
//! (from the published OpenTelemetry protos), keeping every span it receives. The tests point
//! the servers' `OTEL_EXPORTER_OTLP_ENDPOINT` at it; `otlp-sink` serves it as a program.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value::Value};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// One received span, flattened.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedSpan {
    /// The exporting process's `service.name`.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub error: bool,
    pub status_message: String,
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    /// One JSON object, for `otlp-sink`'s output.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "service": self.service,
            "name": self.name,
            "trace_id": self.trace_id,
            "span_id": self.span_id,
            "parent_span_id": self.parent_span_id,
            "status": if self.error { "ERROR" } else { "OK" },
            "status_message": self.status_message,
            "attributes": self.attributes,
        })
        .to_string()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(&kv.value)))
        .collect()
}

/// Spans received so far, shared with the service.
pub type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

/// The `TraceService`; `on_span` sees each span as it arrives.
#[derive(Clone)]
pub struct Receiver {
    spans: Spans,
    on_span: Arc<dyn Fn(&ReceivedSpan) + Send + Sync>,
}

impl Receiver {
    pub fn new(on_span: impl Fn(&ReceivedSpan) + Send + Sync + 'static) -> (Self, Spans) {
        let spans = Spans::default();
        (
            Receiver {
                spans: spans.clone(),
                on_span: Arc::new(on_span),
            },
            spans,
        )
    }

    /// Serves the receiver on `listener` until `shutdown` resolves.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), tonic::transport::Error> {
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(self))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                shutdown,
            )
            .await
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut received = Vec::new();
        for rs in req.into_inner().resource_spans {
            let resource = rs
                .resource
                .map(|r| attributes(&r.attributes))
                .unwrap_or_default();
            let service = resource.get("service.name").cloned().unwrap_or_default();
            for scope in rs.scope_spans {
                for span in scope.spans {
                    let status = span.status.unwrap_or_default();
                    received.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex(&span.trace_id),
                        span_id: hex(&span.span_id),
                        parent_span_id: hex(&span.parent_span_id),
                        error: status.code == StatusCode::Error as i32,
                        status_message: status.message,
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        for s in &received {
            (self.on_span)(s);
        }
        self.spans
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(received);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
