//! Weir's metric families: names, labels, and the Prometheus text encoding.
//!
//! Owns: every metric Weir exports and its label set (kept low-cardinality: peer identities
//! are bounded by the mesh's workloads, never by connections). The data path only bumps the
//! atomics these families hand out; encoding happens on scrape. Does not own the admin server.
#![forbid(unsafe_code)]

pub mod http;
pub mod rdma;
pub mod records;
pub mod trace;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Which listener a connection came through.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Direction {
    /// Local app -> this node -> peer node.
    Outbound,
    /// Peer node -> this node -> local backend.
    Inbound,
}

/// Which way bytes flowed relative to the mesh leg.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Flow {
    /// Sent to the peer node.
    ToPeer,
    /// Received from the peer node.
    FromPeer,
}

/// Labels of a connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnLabels {
    /// Listener.
    pub direction: Direction,
    /// `ktls_hw`, `ktls_sw` or `userspace`.
    pub mode: &'static str,
    /// The peer's SPIFFE ID.
    pub peer: String,
}

/// Labels of a closed connection.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClosedLabels {
    /// Listener.
    pub direction: Direction,
    /// Data-path mode.
    pub mode: &'static str,
    /// The peer's SPIFFE ID.
    pub peer: String,
    /// How it ended: closed, reset_local, reset_peer, error, session_limit.
    pub outcome: &'static str,
}

/// Labels of byte counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BytesLabels {
    /// Listener.
    pub direction: Direction,
    /// To or from the peer node.
    pub flow: Flow,
    /// Data-path mode.
    pub mode: &'static str,
    /// The peer's SPIFFE ID.
    pub peer: String,
}

/// Labels of gauges of open connections.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ActiveLabels {
    /// Listener.
    pub direction: Direction,
    /// Data-path mode.
    pub mode: &'static str,
}

/// Labels of the other plane's state (roles `host` and `dpu`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PlaneLabels {
    /// `host` or `dpu`.
    pub plane: &'static str,
}

/// Labels of wire-side facts a host plane has from its DPU.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WireLabels {
    /// The workload's SPIFFE ID.
    pub workload: String,
    /// Mesh service.
    pub service: String,
}

/// Labels of refused connections.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusedLabels {
    /// Listener.
    pub direction: Direction,
    /// Why (a fixed set: see ARCHITECTURE.md).
    pub reason: &'static str,
}

/// Labels carrying only a mode.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ModeLabels {
    /// Data-path mode.
    pub mode: &'static str,
}

/// Labels carrying a result.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: &'static str,
}

/// Labels carrying a workload name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    /// Workload name (bounded by the config).
    pub workload: String,
}

/// Labels of kernel-refused connects.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KernelRefusedLabels {
    /// `deny` (a rule), `limit` (the connection limit) or `map_full` (no socket storage: fail closed).
    pub reason: &'static str,
}

/// Labels of per-connection kernel facts: the workload and whom it talked to.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadPeerLabels {
    /// Workload name.
    pub workload: String,
    /// The mesh peer's SPIFFE ID for captured connections, else `external` (bounded).
    pub peer: String,
}

/// Labels of kernel byte counters.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KernelBytesLabels {
    /// Workload name.
    pub workload: String,
    /// As in [`WorkloadPeerLabels`].
    pub peer: String,
    /// `acked` (sent and acknowledged) or `received`.
    pub direction: &'static str,
}

fn rtt_histogram() -> Histogram {
    // 50 us .. ~3.3 s, doubling.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(50.0, 2.0, 17))
}

/// Labels of kernel-counted HTTP requests.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpMethodLabels {
    /// Workload name.
    pub workload: String,
    /// Request method.
    pub method: &'static str,
}

/// Metrics from the eBPF kernel path (sockops facts of workload connections, connect()
/// verdicts). Connection facts are folded in when a connection closes.
#[derive(Debug)]
pub struct KernelMetrics {
    /// Smoothed RTT at close, per workload connection.
    pub srtt_us: Family<WorkloadPeerLabels, Histogram, fn() -> Histogram>,
    /// Retransmitted segments of closed connections.
    pub retransmits: Family<WorkloadPeerLabels, Counter>,
    /// Bytes of closed connections.
    pub bytes: Family<KernelBytesLabels, Counter>,
    /// Connections open now, as the kernel counts them for the limit.
    pub open: Family<WorkloadLabels, Gauge>,
    /// connect() calls refused in the kernel.
    pub refused: Family<KernelRefusedLabels, Counter>,
    /// Connections captured to this node.
    pub captured: Counter,
    /// HTTP/1.x requests counted by sk_msg in the kernel (workloads with `count_http`).
    pub http_requests: Family<HttpMethodLabels, Counter>,
}

impl Default for KernelMetrics {
    fn default() -> Self {
        Self {
            srtt_us: Family::new_with_constructor(rtt_histogram),
            retransmits: Family::default(),
            bytes: Family::default(),
            open: Family::default(),
            refused: Family::default(),
            captured: Counter::default(),
            http_requests: Family::default(),
        }
    }
}

/// Every metric of a node.
#[derive(Debug)]
pub struct Metrics {
    /// The eBPF kernel path's metrics (empty when it does not run).
    pub kernel: KernelMetrics,
    /// The HTTP/1.1 path's metrics.
    pub http: http::HttpMetrics,
    /// RDMA bootstraps, allowances, queue pairs and port counters.
    pub rdma: rdma::RdmaMetrics,
    /// Connections opened (handshake and authorization passed).
    pub opened: Family<ConnLabels, Counter>,
    /// Connections closed, by outcome.
    pub closed: Family<ClosedLabels, Counter>,
    /// Connections open now.
    pub active: Family<ActiveLabels, Gauge>,
    /// Plaintext bytes through the mesh leg.
    pub bytes: Family<BytesLabels, Counter>,
    /// Bytes that crossed userspace (0 on the kTLS splice path).
    pub userspace_bytes: Family<ModeLabels, Counter>,
    /// Connections refused, by reason.
    pub refused: Family<RefusedLabels, Counter>,
    /// Connections that wanted kTLS but fell back to userspace TLS.
    pub ktls_fallbacks: Counter,
    /// 1 when this node uses kTLS for new connections.
    pub ktls_enabled: Gauge,
    /// SVID rotation attempts, by result.
    pub svid_rotations: Family<ResultLabels, Counter>,
    /// Unix time the current SVID expires.
    pub svid_expiry_seconds: Gauge,
    /// Retransmitted segments on mesh legs (TCP_INFO, added as sampled and at close).
    pub tcp_retransmits: Family<ConnLabels, Counter>,
    /// Smoothed RTT of mesh legs at close.
    pub tcp_srtt_us: Family<ActiveLabels, Histogram, fn() -> Histogram>,
    /// Host-wide kTLS counters from `/proc/net/tls_stat`, as the kernel reports them.
    pub kernel_tls_stat: Family<TlsStatLabels, Gauge>,
    /// Spans handed to the OTLP exporter, by result.
    pub otlp_spans: Family<SpanResultLabels, Counter>,
    /// 1 when the other plane (host or DPU) is connected, reporting and ready.
    pub plane_ready: Family<PlaneLabels, Gauge>,
    /// Unix time the other plane's SVID expires, as it last reported.
    pub plane_svid_expiry_seconds: Family<PlaneLabels, Gauge>,
    /// Connection records the DPU could not stream to the host plane (its queue was full).
    pub plane_records_dropped: Counter,
    /// New host channel keys: made (the DPU) or installed (the host plane).
    pub channel_key_rotations: Counter,
    /// Retransmitted segments on the DPU's wire leg of a host workload's connections.
    pub wire_tcp_retransmits: Family<WireLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            kernel: KernelMetrics::default(),
            http: http::HttpMetrics::default(),
            rdma: rdma::RdmaMetrics::default(),
            opened: Family::default(),
            closed: Family::default(),
            active: Family::default(),
            bytes: Family::default(),
            userspace_bytes: Family::default(),
            refused: Family::default(),
            ktls_fallbacks: Counter::default(),
            ktls_enabled: Gauge::default(),
            svid_rotations: Family::default(),
            svid_expiry_seconds: Gauge::default(),
            tcp_retransmits: Family::default(),
            tcp_srtt_us: Family::new_with_constructor(rtt_histogram),
            kernel_tls_stat: Family::default(),
            otlp_spans: Family::default(),
            plane_ready: Family::default(),
            plane_svid_expiry_seconds: Family::default(),
            plane_records_dropped: Counter::default(),
            channel_key_rotations: Counter::default(),
            wire_tcp_retransmits: Family::default(),
        }
    }
}

/// Labels of `/proc/net/tls_stat` lines.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TlsStatLabels {
    /// The kernel's counter name (`TlsCurrTxSw`, `TlsDecryptError`, …; a fixed set).
    pub stat: String,
}

/// Labels of exported spans.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpanResultLabels {
    /// `exported`, `dropped_queue_full` (the exporter fell behind) or `dropped_export_failed`
    /// (the collector was unreachable or refused them).
    pub result: &'static str,
}

impl Metrics {
    /// Registers every family under the `weir_` prefix.
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("weir");
        r.register(
            "connections_opened",
            "Mesh connections opened (after handshake and authorization)",
            self.opened.clone(),
        );
        r.register("connections_closed", "Mesh connections closed, by outcome", self.closed.clone());
        r.register("connections_active", "Mesh connections open now", self.active.clone());
        r.register("bytes", "Plaintext bytes through the mesh leg, by flow", self.bytes.clone());
        r.register("userspace_bytes", "Payload bytes that crossed userspace", self.userspace_bytes.clone());
        r.register("connections_refused", "Connections refused, by reason", self.refused.clone());
        r.register(
            "ktls_fallbacks",
            "Connections that fell back from kTLS to userspace TLS",
            self.ktls_fallbacks.clone(),
        );
        r.register("ktls_enabled", "1 when new connections use kernel TLS", self.ktls_enabled.clone());
        r.register("svid_rotations", "SVID rotation attempts, by result", self.svid_rotations.clone());
        r.register(
            "svid_expiry_timestamp_seconds",
            "Unix time the current SVID expires",
            self.svid_expiry_seconds.clone(),
        );
        r.register(
            "tcp_retransmits",
            "Retransmitted segments on mesh legs (TCP_INFO of Weir's own sockets)",
            self.tcp_retransmits.clone(),
        );
        r.register("tcp_srtt_microseconds", "Smoothed RTT of mesh legs at close (TCP_INFO)", self.tcp_srtt_us.clone());
        r.register(
            "kernel_tls_stat",
            "Host-wide kernel TLS counters from /proc/net/tls_stat, as the kernel reports them",
            self.kernel_tls_stat.clone(),
        );
        r.register("otlp_spans", "Request spans handed to the OTLP exporter, by result", self.otlp_spans.clone());
        r.register(
            "plane_ready",
            "1 when the other plane (host or DPU) is connected, reporting and ready; 0 names it unready in /readyz",
            self.plane_ready.clone(),
        );
        r.register(
            "plane_svid_expiry_timestamp_seconds",
            "Unix time the other plane's SVID expires, as it last reported",
            self.plane_svid_expiry_seconds.clone(),
        );
        r.register(
            "plane_records_dropped",
            "Connection records the DPU could not stream to the host plane (queue full)",
            self.plane_records_dropped.clone(),
        );
        r.register(
            "channel_key_rotations",
            "New host channel keys: made on the DPU, installed on the host plane",
            self.channel_key_rotations.clone(),
        );
        r.register(
            "wire_tcp_retransmits",
            "Retransmitted segments on the DPU's wire leg of this host's workload connections",
            self.wire_tcp_retransmits.clone(),
        );
        self.http.register(&mut r);
        self.rdma.register(&mut r);
        let k = &self.kernel;
        r.register(
            "kernel_tcp_srtt_microseconds",
            "Smoothed RTT of workload connections at close (sockops)",
            k.srtt_us.clone(),
        );
        r.register(
            "kernel_tcp_retransmits",
            "Retransmitted segments of closed workload connections (sockops)",
            k.retransmits.clone(),
        );
        r.register("kernel_tcp_bytes", "Bytes of closed workload connections (sockops)", k.bytes.clone());
        r.register("kernel_tcp_connections_open", "Workload connections open now (kernel count)", k.open.clone());
        r.register("kernel_connect_refused", "connect() calls refused in the kernel, by reason", k.refused.clone());
        r.register("kernel_captured", "Workload connections captured to this node", k.captured.clone());
        r.register(
            "kernel_http_requests",
            "HTTP/1.x requests counted in the kernel by sk_msg (request lines at the start of a send), not by a proxy",
            k.http_requests.clone(),
        );
        r
    }

    /// The Prometheus text exposition of `registry`.
    pub fn encode(registry: &Registry) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, registry);
        out
    }
}
