//! Request spans to an OTLP/gRPC collector, off the data path. A finished request offers one
//! span to a bounded queue and never waits: a full queue drops the span and counts it. A task
//! batches the queue and exports; a failed export is counted and logged, never retried into
//! the queue, so a collector that is down costs spans, not traffic.
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prometheus_client::metrics::counter::Counter;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;
use weir_telemetry::trace::TraceContext;
use weir_telemetry::{Metrics, SpanResultLabels};

/// Most spans in one export call.
const BATCH: usize = 512;
/// How often the queue is drained into export calls.
const DRAIN_EVERY: Duration = Duration::from_millis(100);
/// An export that takes longer has failed.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The queue into the exporter task.
pub(crate) struct Spans {
    tx: mpsc::Sender<SpanData>,
    queue_full: Counter,
}

/// One finished request as a span.
pub(crate) struct RequestSpan<'a> {
    pub trace: &'a TraceContext,
    pub inbound: bool,
    pub start: SystemTime,
    pub end: SystemTime,
    pub status: u16,
    pub attributes: Vec<KeyValue>,
}

impl Spans {
    /// Starts the exporter task for `endpoint`; spans beyond `queue` waiting are dropped.
    pub fn start(endpoint: &str, queue: usize, node: &str, metrics: &Metrics) -> (Self, tokio::task::JoinHandle<()>) {
        let counter = |result| metrics.otlp_spans.get_or_create(&SpanResultLabels { result }).clone();
        let (tx, rx) = mpsc::channel(queue);
        let (exported, failed) = (counter("exported"), counter("dropped_export_failed"));
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .with_timeout(EXPORT_TIMEOUT)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name("weir")
            .with_attribute(KeyValue::new("weir.node", node.to_owned()))
            .build();
        let endpoint = endpoint.to_owned();
        let task = tokio::spawn(async move {
            match exporter {
                Ok(mut exporter) => {
                    exporter.set_resource(&resource);
                    export_loop(rx, exporter, &endpoint, exported, failed).await;
                }
                Err(e) => {
                    tracing::error!(endpoint, error = %e, "OTLP exporter could not be built: request spans are dropped");
                    discard(rx, failed).await;
                }
            }
        });
        (Self { tx, queue_full: counter("dropped_queue_full") }, task)
    }

    /// Offers a span; drops it (counted) if the exporter is behind.
    pub fn offer(&self, span: RequestSpan<'_>) {
        let Some(data) = span_data(span) else { return };
        if self.tx.try_send(data).is_err() {
            self.queue_full.inc();
        }
    }
}

async fn export_loop(
    mut rx: mpsc::Receiver<SpanData>,
    exporter: opentelemetry_otlp::SpanExporter,
    endpoint: &str,
    exported: Counter,
    failed: Counter,
) {
    let mut failing = false;
    loop {
        // Drain on a timer, not on arrival: a receiver parked in recv() would be woken by
        // every offered span, and each wake-up costs the data path a cross-thread unpark.
        tokio::time::sleep(DRAIN_EVERY).await;
        let mut batch = Vec::with_capacity(BATCH);
        loop {
            match rx.try_recv() {
                Ok(span) => batch.push(span),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) if batch.is_empty() => return,
                Err(mpsc::error::TryRecvError::Disconnected) => break,
            }
            if batch.len() == BATCH {
                export(&exporter, std::mem::take(&mut batch), endpoint, (&exported, &failed), &mut failing).await;
            }
        }
        if !batch.is_empty() {
            export(&exporter, batch, endpoint, (&exported, &failed), &mut failing).await;
        }
    }
}

async fn export(
    exporter: &opentelemetry_otlp::SpanExporter,
    batch: Vec<SpanData>,
    endpoint: &str,
    (exported, failed): (&Counter, &Counter),
    failing: &mut bool,
) {
    let n = batch.len() as u64;
    match tokio::time::timeout(EXPORT_TIMEOUT, exporter.export(batch)).await {
        Ok(Ok(())) => {
            exported.inc_by(n);
            if std::mem::take(failing) {
                tracing::info!(endpoint, "OTLP export recovered");
            }
        }
        Ok(Err(e)) => {
            failed.inc_by(n);
            // One line when it starts failing, not one per batch.
            if !std::mem::replace(failing, true) {
                tracing::warn!(endpoint, error = %e, "OTLP export failing: spans dropped (weir_otlp_spans_total{{result=\"dropped_export_failed\"}})");
            }
        }
        Err(_) => {
            failed.inc_by(n);
            if !std::mem::replace(failing, true) {
                tracing::warn!(endpoint, "OTLP export timed out: spans dropped");
            }
        }
    }
}

async fn discard(mut rx: mpsc::Receiver<SpanData>, failed: Counter) {
    while rx.recv().await.is_some() {
        failed.inc();
    }
}

fn span_data(s: RequestSpan<'_>) -> Option<SpanData> {
    let trace_id = TraceId::from_hex(&s.trace.trace_id).ok()?;
    let span_id = SpanId::from_hex(&s.trace.span_id).ok()?;
    let parent = s.trace.parent_id.as_deref().and_then(|p| SpanId::from_hex(p).ok());
    let flags = u8::from_str_radix(&s.trace.flags, 16).map_or(TraceFlags::SAMPLED, TraceFlags::new);
    Some(SpanData {
        span_context: SpanContext::new(trace_id, span_id, flags, false, TraceState::default()),
        parent_span_id: parent.unwrap_or(SpanId::INVALID),
        parent_span_is_remote: parent.is_some(),
        span_kind: if s.inbound { SpanKind::Server } else { SpanKind::Client },
        name: if s.inbound { "weir inbound request".into() } else { "weir outbound request".into() },
        start_time: s.start,
        end_time: s.end,
        attributes: s.attributes,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: if s.status >= 500 || s.status == 0 {
            Status::error(format!("status {}", s.status))
        } else {
            Status::Unset
        },
        instrumentation_scope: InstrumentationScope::builder("weir").build(),
    })
}
