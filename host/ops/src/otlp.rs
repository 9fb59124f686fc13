//! The flows' spans exported over OTLP/HTTP (protobuf) with the
//! `opentelemetry-otlp` exporter, so a message's trace (webhook accepted on
//! one host, received and delivered on others) shows in any OpenTelemetry
//! backend. Spans are queued in memory (at most [`QUEUE`]; beyond that
//! they are dropped and counted, never blocking a flow) and sent in
//! batches of up to [`MAX_BATCH`] at least every [`FLUSH_EVERY`].

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind as OtelKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use serde::Deserialize;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use switchyard_flows::observe::FlowObserver;
use switchyard_flows::trace::{FlowSpan, SpanKind};

/// Spans waiting for export, at most.
pub const QUEUE: usize = 8_192;
/// Spans per export request, at most.
pub const MAX_BATCH: usize = 512;
/// The longest a span waits before it is sent.
pub const FLUSH_EVERY: Duration = Duration::from_millis(500);

/// The longest one export request may take before its spans are dropped.
pub const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `[telemetry]`: where spans go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP traces endpoint, e.g.
    /// `http://127.0.0.1:4318/v1/traces` (a collector beside the host;
    /// plain HTTP only). Default: none, nothing is exported.
    pub otlp_endpoint: Option<String>,
    /// The spans' `service.name`. Default: `switchyard`.
    pub service_name: Option<String>,
}

impl TelemetryConfig {
    /// Checks the endpoint.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(endpoint) = &self.otlp_endpoint {
            let uri: http::Uri = endpoint
                .parse()
                .map_err(|e| format!("telemetry.otlp_endpoint `{endpoint}`: {e}"))?;
            if uri.scheme_str() != Some("http") || uri.host().is_none() {
                return Err(format!(
                    "telemetry.otlp_endpoint `{endpoint}`: must be an http:// URL (a collector beside the host)"
                ));
            }
        }
        Ok(())
    }
}

/// Exports the flows' spans; an observer of the flows.
#[derive(Debug)]
pub struct OtlpSpans {
    queue: tokio::sync::mpsc::Sender<FlowSpan>,
    dropped: Arc<AtomicU64>,
}

impl OtlpSpans {
    /// Starts exporting to `config.otlp_endpoint` (call within a tokio
    /// runtime); `None` when no endpoint is configured. `instance` becomes
    /// `service.instance.id` (the host's name in the cluster).
    pub fn start(config: &TelemetryConfig, instance: &str) -> Result<Option<Self>, String> {
        config.validate()?;
        let Some(endpoint) = &config.otlp_endpoint else {
            return Ok(None);
        };
        let mut exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(LoopbackHttp)
            .with_endpoint(endpoint.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(EXPORT_TIMEOUT)
            .build()
            .map_err(|e| format!("telemetry: {e}"))?;
        let service = config.service_name.as_deref().unwrap_or("switchyard");
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(service.to_owned())
                .with_attribute(KeyValue::new("service.instance.id", instance.to_owned()))
                .build(),
        );
        let (queue, spans) = tokio::sync::mpsc::channel(QUEUE);
        tokio::spawn(export(exporter, spans));
        Ok(Some(OtlpSpans {
            queue,
            dropped: Arc::default(),
        }))
    }

    /// Spans dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl FlowObserver for OtlpSpans {
    fn span(&self, span: &FlowSpan) {
        if self.queue.try_send(span.clone()).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn export(
    exporter: opentelemetry_otlp::SpanExporter,
    mut spans: tokio::sync::mpsc::Receiver<FlowSpan>,
) {
    let scope = InstrumentationScope::builder("switchyard").build();
    while let Some(first) = spans.recv().await {
        let mut batch = vec![span_data(first, &scope)];
        let flush = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(flush, spans.recv()).await {
                Ok(Some(span)) => batch.push(span_data(span, &scope)),
                Ok(None) | Err(_) => break,
            }
        }
        let count = batch.len();
        // A collector that hangs must not hold the next batches forever.
        match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(target: "switchyard::telemetry", spans = count, "OTLP export failed: {e}")
            }
            Err(_) => {
                tracing::warn!(target: "switchyard::telemetry", spans = count, "OTLP export timed out")
            }
        }
    }
}

fn span_data(span: FlowSpan, scope: &InstrumentationScope) -> SpanData {
    let flags = if span.context.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let context = SpanContext::new(
        TraceId::from_bytes(span.context.trace_id),
        SpanId::from_bytes(span.context.span_id),
        flags,
        false,
        TraceState::default(),
    );
    let mut attributes: Vec<KeyValue> = (span.attributes.into_iter())
        .map(|(k, v)| KeyValue::new(k, v))
        .collect();
    let status = match span.error {
        Some(error) => {
            attributes.push(KeyValue::new("error.message", error.clone()));
            Status::error(error)
        }
        None => Status::Ok,
    };
    SpanData {
        span_context: context,
        parent_span_id: span
            .parent_span_id
            .map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: span.parent_span_id.is_some(),
        span_kind: match span.kind {
            SpanKind::Server => OtelKind::Server,
            SpanKind::Consumer => OtelKind::Consumer,
        },
        name: span.name.into(),
        start_time: span.start,
        end_time: span.end,
        attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// The exporter's HTTP client: one hyper HTTP/1.1 connection per export
/// request, on the host's tokio runtime (no second HTTP stack).
#[derive(Debug, Clone, Copy)]
struct LoopbackHttp;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for LoopbackHttp {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        use http_body_util::{BodyExt, Full};
        let uri = request.uri().clone();
        let host = uri.host().ok_or("no host in the OTLP endpoint")?.to_owned();
        let port = uri.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(connection);
        let (mut parts, body) = request.into_parts();
        parts
            .headers
            .insert(http::header::HOST, http::HeaderValue::from_str(&host)?);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        parts.uri = path.parse()?;
        let response = sender
            .send_request(http::Request::from_parts(parts, Full::new(body)))
            .await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(http::Response::from_parts(parts, body))
    }
}
