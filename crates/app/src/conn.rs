//! What every mesh connection shares: the node context, ids, refusal reasons, and the
//! bookkeeping around the pump (metrics open/close, the closing log line).
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use weir_forward::{Outcome, Tally};
use weir_identity::{SpiffeId, SvidStore};
use weir_policy::InboundPolicy;
use weir_telemetry::{
    ActiveLabels, BytesLabels, ClosedLabels, ConnLabels, Direction, Flow, Metrics, ModeLabels, RefusedLabels,
};
use weir_tls::ktls::Support;
use weir_tls::{Mode, TlsConfigs};

/// Everything a connection handler needs, shared by all of a node's listeners.
pub(crate) struct Shared {
    pub metrics: Metrics,
    pub tls: Arc<TlsConfigs>,
    pub store: Arc<SvidStore>,
    pub ktls: Support,
    pub limits: weir_forward::Limits,
    /// Inbound allow-lists (swapped on reload).
    pub policy: std::sync::RwLock<InboundPolicy>,
    /// HTTP handling of inbound services with `protocol = "http"` (swapped on reload).
    pub http: std::sync::RwLock<std::collections::HashMap<String, Arc<crate::http::HttpService>>>,
    pub handshake_timeout: Duration,
    next_id: AtomicU64,
    /// Mesh connections open now (all listeners), for graceful shutdown.
    pub open: AtomicI64,
    /// Original destinations of captured connections (its own lock: the capture path never
    /// waits behind the telemetry walk of `kernel`).
    pub orig_dst: Option<weir_ebpf::OriginalDestinations>,
    /// The eBPF kernel path, when it runs (taken out to detach it on a clean stop).
    pub kernel: std::sync::Mutex<Option<weir_ebpf::KernelPath>>,
    /// Workloads by kernel id.
    pub workloads: std::collections::HashMap<u32, Workload>,
    /// Cookies of closed kernel connections already folded into metrics.
    pub kernel_reported: std::sync::Mutex<std::collections::HashSet<u64>>,
    /// Mesh service -> the outbound entry that says where its peer is (HTTP route targets).
    pub directory: std::collections::HashMap<String, Arc<weir_config::OutboundRoute>>,
    /// Captured service address -> the route that serves it.
    pub captured: std::collections::HashMap<std::net::SocketAddr, Arc<weir_config::OutboundRoute>>,
}

/// A workload at run time: its rules and its own identity.
pub(crate) struct Workload {
    pub name: String,
    /// L4 rules, re-checked on captured connections (swapped on reload).
    pub l4: std::sync::RwLock<weir_policy::WorkloadL4>,
    pub tls: Arc<TlsConfigs>,
    pub store: Arc<SvidStore>,
}

impl Shared {
    pub fn new(
        tls: Arc<TlsConfigs>,
        store: Arc<SvidStore>,
        ktls: Support,
        limits: weir_forward::Limits,
        policy: InboundPolicy,
        handshake_timeout: Duration,
    ) -> Self {
        Self {
            metrics: Metrics::default(),
            tls,
            store,
            ktls,
            limits,
            policy: std::sync::RwLock::new(policy),
            http: Default::default(),
            handshake_timeout,
            next_id: AtomicU64::new(1),
            open: AtomicI64::new(0),
            orig_dst: None,
            kernel: std::sync::Mutex::new(None),
            workloads: std::collections::HashMap::new(),
            kernel_reported: std::sync::Mutex::new(std::collections::HashSet::new()),
            captured: std::collections::HashMap::new(),
            directory: std::collections::HashMap::new(),
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn ktls_available(&self) -> bool {
        matches!(self.ktls, Support::Available(_))
    }

    /// Counts and logs a refused connection (one line per refusal).
    pub fn refuse(&self, id: u64, direction: Direction, reason: Refusal, detail: &dyn std::fmt::Display) {
        self.metrics.refused.get_or_create(&RefusedLabels { direction, reason: reason.as_label() }).inc();
        tracing::warn!(conn = id, ?direction, reason = reason.as_label(), %detail, "connection refused");
    }
}

/// Why a connection was refused before any payload byte moved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Refusal {
    HandshakeTimeout,
    TlsHandshake,
    PeerIdMismatch,
    NoSpiffeId,
    PreambleMalformed,
    NotAllowed,
    UnknownService,
    PeerUnreachable,
    BackendUnavailable,
    PeerRefused,
    KtlsSetupFailed,
    NoOriginalDestination,
    L4Denied,
}

impl Refusal {
    pub fn as_label(self) -> &'static str {
        match self {
            Self::HandshakeTimeout => "handshake_timeout",
            Self::TlsHandshake => "tls_handshake",
            Self::PeerIdMismatch => "peer_id_mismatch",
            Self::NoSpiffeId => "no_spiffe_id",
            Self::PreambleMalformed => "preamble_malformed",
            Self::NotAllowed => "not_allowed",
            Self::UnknownService => "unknown_service",
            Self::PeerUnreachable => "peer_unreachable",
            Self::BackendUnavailable => "backend_unavailable",
            Self::PeerRefused => "peer_refused",
            Self::KtlsSetupFailed => "ktls_setup_failed",
            Self::NoOriginalDestination => "no_original_destination",
            Self::L4Denied => "l4_denied",
        }
    }
}

/// One accepted, authorized connection: its metrics handles and the closing log line.
pub(crate) struct Tracked<'a> {
    shared: &'a Shared,
    pub id: u64,
    direction: Direction,
    pub mode: Mode,
    pub peer: SpiffeId,
    pub service: String,
    started: Instant,
    pub tally: Tally,
}

impl<'a> Tracked<'a> {
    pub fn open(
        shared: &'a Shared,
        id: u64,
        direction: Direction,
        mode: Mode,
        peer: SpiffeId,
        service: String,
    ) -> Self {
        let m = &shared.metrics;
        let label = mode.as_label();
        m.opened.get_or_create(&ConnLabels { direction, mode: label, peer: peer.to_string() }).inc();
        m.active.get_or_create(&ActiveLabels { direction, mode: label }).inc();
        shared.open.fetch_add(1, Ordering::Relaxed);
        let bytes =
            |flow| m.bytes.get_or_create(&BytesLabels { direction, flow, mode: label, peer: peer.to_string() }).clone();
        let tally = Tally {
            to_peer: weir_forward::FlowCounter::new(bytes(Flow::ToPeer)),
            from_peer: weir_forward::FlowCounter::new(bytes(Flow::FromPeer)),
            userspace: m.userspace_bytes.get_or_create(&ModeLabels { mode: label }).clone(),
            userspace_body: Default::default(),
        };
        tracing::info!(conn = id, ?direction, mode = label, peer = %peer, service, "connection open");
        Self { shared, id, direction, mode, peer, service, started: Instant::now(), tally }
    }

    pub fn close(self, outcome: Outcome) {
        let m = &self.shared.metrics;
        let label = self.mode.as_label();
        m.closed
            .get_or_create(&ClosedLabels {
                direction: self.direction,
                mode: label,
                peer: self.peer.to_string(),
                outcome: outcome.as_label(),
            })
            .inc();
        m.active.get_or_create(&ActiveLabels { direction: self.direction, mode: label }).dec();
        self.shared.open.fetch_sub(1, Ordering::Relaxed);
        let (sent, received) = (self.tally.to_peer.get(), self.tally.from_peer.get());
        let secs = self.started.elapsed().as_secs_f64();
        match &outcome {
            Outcome::Closed => {
                tracing::info!(conn = self.id, direction = ?self.direction, mode = label, peer = %self.peer, service = self.service, sent, received, secs, "connection closed")
            }
            Outcome::Failed(side, e) => {
                tracing::warn!(conn = self.id, direction = ?self.direction, mode = label, peer = %self.peer, service = self.service, sent, received, secs, ?side, error = %e, "connection failed")
            }
            // A reset is how clients abandon connections (load generators at the end of a run,
            // browsers navigating away): worth a line, not a warning.
            Outcome::Reset(_) => {
                tracing::info!(conn = self.id, direction = ?self.direction, mode = label, peer = %self.peer, service = self.service, sent, received, secs, outcome = outcome.as_label(), "connection reset")
            }
            other => {
                tracing::warn!(conn = self.id, direction = ?self.direction, mode = label, peer = %self.peer, service = self.service, sent, received, secs, outcome = other.as_label(), "connection ended abnormally")
            }
        }
    }
}

/// The rustls error inside a tokio-rustls I/O error, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}
