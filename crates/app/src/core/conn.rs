//! What every mesh connection shares: the node context, ids, refusal reasons, and the
//! bookkeeping around the pump (metrics open/close, the closing log line).
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use weir_forward::{Outcome, Tally};
use weir_identity::{SpiffeId, SvidStore};
use weir_policy::InboundPolicy;
use weir_telemetry::records::{Captured, ConnRecord, RecordStart, Records, TcpFacts};
use weir_telemetry::{
    ActiveLabels, BytesLabels, ClosedLabels, ConnLabels, Direction, Flow, Metrics, ModeLabels, RefusedLabels,
};
use weir_tls::ktls::Support;
use weir_tls::{Mode, SessionFacts, TlsConfigs};

/// Everything a connection handler needs, shared by all of a node's listeners.
pub(crate) struct Shared {
    pub metrics: Metrics,
    /// Records of open mesh connections (sampled and listed off the data path).
    pub records: Records,
    /// Request spans to the OTLP collector, when one is configured.
    pub spans: Option<crate::core::otlp::Spans>,
    /// Share of the traces this node starts that are sampled (exported as spans).
    pub span_ratio: f64,
    pub tls: Arc<TlsConfigs>,
    pub store: Arc<SvidStore>,
    pub ktls: Support,
    pub limits: weir_forward::Limits,
    /// Inbound allow-lists (swapped on reload).
    pub policy: std::sync::RwLock<InboundPolicy>,
    /// HTTP handling of inbound services with `protocol = "http"` (swapped on reload).
    pub http: std::sync::RwLock<std::collections::HashMap<String, Arc<crate::l7::http1::HttpService>>>,
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
    /// The role this node runs in, as the core sees it: a label and hooks, never a name to test.
    pub role: Arc<dyn crate::core::role::Role>,
    /// Identities this node holds SVIDs for besides its own and its workloads' (a DPU's: the
    /// host's workloads), by name: all must be valid and rotating for the node to be ready.
    pub acting_for: Vec<(String, Arc<SvidStore>)>,
    /// A host plane's way to its DPU (captured connections go there).
    pub to_dpu: Option<crate::planes::host::ToDpu>,
    /// The host channel's keys (roles `host` and `dpu`).
    pub channel_keys: Option<Arc<crate::channel::keys::ChannelKeys>>,
    /// RDMA intents and queue-pair watch, when the config asks for RDMA control.
    pub rdma: Option<crate::rdma::Rdma>,
}

/// A workload at run time: its rules and its own identity.
pub(crate) struct Workload {
    pub name: String,
    /// L4 rules, re-checked on captured connections (swapped on reload).
    pub l4: std::sync::RwLock<weir_policy::WorkloadL4>,
    /// Its SPIFFE ID.
    pub id: SpiffeId,
    /// Its own SVID; `None` on a host plane, where the DPU holds it.
    pub svid: Option<WorkloadSvid>,
}

/// A workload's SVID and the TLS configurations that present it.
pub(crate) struct WorkloadSvid {
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
            records: Records::default(),
            spans: None,
            span_ratio: 1.0,
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
            role: Arc::new(crate::core::role::Standalone),
            acting_for: Vec::new(),
            to_dpu: None,
            channel_keys: None,
            rdma: None,
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
    /// Host channel (DPU role): the preamble is malformed.
    HostPreambleMalformed,
    /// Host channel: the preamble's MAC does not verify (no key, or altered bytes).
    HostPreambleForged,
    /// Host channel: the preamble's time is outside the window.
    HostPreambleStale,
    /// Host channel: the preamble's nonce was seen before.
    HostPreambleReplayed,
    /// Host channel: too many nonces remembered to accept another now.
    HostChannelBusy,
    /// Host channel: a workload this DPU does not act for.
    UnregisteredWorkload,
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
            Self::HostPreambleMalformed => "host_preamble_malformed",
            Self::HostPreambleForged => "host_preamble_forged",
            Self::HostPreambleStale => "host_preamble_stale",
            Self::HostPreambleReplayed => "host_preamble_replayed",
            Self::HostChannelBusy => "host_channel_busy",
            Self::UnregisteredWorkload => "unregistered_workload",
        }
    }
}

/// The mesh leg as a connection record shows it.
#[derive(Debug, Clone)]
pub(crate) struct MeshLeg {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub fd: RawFd,
    pub session: SessionFacts,
    /// Served by a copy-mode HTTP listener.
    pub copy: bool,
    /// The workload and app socket, when the kernel path captured the connection.
    pub captured: Option<Captured>,
}

impl MeshLeg {
    pub fn of(tcp: &TcpStream, session: SessionFacts) -> Self {
        let unspecified = SocketAddr::from(([0, 0, 0, 0], 0));
        Self {
            local: tcp.local_addr().unwrap_or(unspecified),
            remote: tcp.peer_addr().unwrap_or(unspecified),
            fd: tcp.as_raw_fd(),
            session,
            copy: false,
            captured: None,
        }
    }

    pub fn copy(self, copy: bool) -> Self {
        Self { copy, ..self }
    }

    pub fn captured(self, captured: Option<Captured>) -> Self {
        Self { captured, ..self }
    }
}

/// One accepted, authorized connection: its metrics handles, its record and the closing
/// access-log line.
pub(crate) struct Tracked<'a> {
    shared: &'a Shared,
    pub id: u64,
    direction: Direction,
    pub mode: Mode,
    pub peer: SpiffeId,
    pub service: String,
    started: Instant,
    pub tally: Tally,
    pub record: Arc<ConnRecord>,
}

impl<'a> Tracked<'a> {
    pub fn open(
        shared: &'a Shared,
        id: u64,
        direction: Direction,
        mode: Mode,
        (peer, service): (SpiffeId, String),
        leg: MeshLeg,
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
            tcp_at_close: Default::default(),
        };
        let record = Arc::new(ConnRecord::new(
            RecordStart {
                id,
                role: shared.role.label(),
                direction,
                local: leg.local,
                remote: leg.remote,
                peer: peer.to_string(),
                service: service.clone(),
                mode: if leg.copy { "copy" } else { label },
                tls_mode: label,
                tls_version: leg.session.version,
                cipher: leg.session.cipher,
                fd: leg.fd,
                captured: leg.captured,
            },
            tally.to_peer.own(),
            tally.from_peer.own(),
        ));
        shared.records.insert(record.clone());
        tracing::info!(conn = id, ?direction, mode = label, peer = %peer, service, "connection open");
        Self { shared, id, direction, mode, peer, service, started: Instant::now(), tally, record }
    }

    pub fn close(self, outcome: Outcome) {
        let m = &self.shared.metrics;
        let label = self.mode.as_label();
        self.record.forget_fd();
        self.shared.records.remove(self.id);
        if let Some(info) = self.tally.tcp_at_close.get() {
            let added = self.record.set_tcp(tcp_facts(info));
            let labels = ConnLabels { direction: self.direction, mode: label, peer: self.peer.to_string() };
            m.tcp_retransmits.get_or_create(&labels).inc_by(u64::from(added));
            let at_close = ActiveLabels { direction: self.direction, mode: label };
            m.tcp_srtt_us.get_or_create(&at_close).observe(f64::from(info.srtt_us));
        }
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
        let secs = self.started.elapsed().as_secs_f64();
        let r = self.record.view(std::time::SystemTime::now());
        // A role may keep the record or join facts of its own to it (the DPU's outbox, the
        // host plane's wire leg), before the closing line.
        self.shared.role.closed(&r, m);
        let tcp = r.tcp.unwrap_or_default();
        let (workload, app) = match &r.captured {
            Some(c) => (c.workload.as_str(), r.app_tcp.unwrap_or_default()),
            None => ("", Default::default()),
        };
        // One access-log line per connection: the whole record, joined with how it ended.
        macro_rules! closing_line {
            ($level:ident, $message:literal $(, $extra:ident = $value:expr)*) => {
                tracing::$level!(
                    target: "weir::access",
                    conn = r.id, direction = r.direction, role = r.role, mode = r.mode,
                    local = %r.local, remote = %r.remote, peer = r.peer, service = r.service,
                    tls_version = r.tls_version, cipher = r.cipher,
                    sent = r.bytes_to_peer, received = r.bytes_from_peer, requests = r.requests,
                    srtt_us = tcp.srtt_us, rttvar_us = tcp.rttvar_us, retransmits = tcp.retransmits,
                    cwnd = tcp.cwnd, delivery_rate = tcp.delivery_rate, secs,
                    workload, app_srtt_us = app.srtt_us, app_retransmits = app.retransmits,
                    outcome = outcome.as_label() $(, $extra = $value)*, $message
                )
            };
        }
        match &outcome {
            Outcome::Closed => closing_line!(info, "connection closed"),
            Outcome::Failed(side, e) => {
                closing_line!(warn, "connection failed", side = format!("{side:?}"), error = e.to_string())
            }
            // A reset is how clients abandon connections (load generators at the end of a run,
            // browsers navigating away): worth a line, not a warning.
            Outcome::Reset(_) => closing_line!(info, "connection reset"),
            _ => closing_line!(warn, "connection ended abnormally"),
        }
    }
}

/// `ktls_hw` when the kernel reports that the NIC encrypts this kTLS socket's records (its ULP
/// info via sock_diag), else `ktls_sw`, also when the kernel will not say (no
/// `CAP_NET_ADMIN`): one netlink round trip per kTLS connection, in its handshake phase.
pub(crate) fn ktls_mode(socket: &TcpStream) -> Mode {
    let (Ok(local), Ok(remote)) = (socket.local_addr(), socket.peer_addr()) else { return Mode::KtlsSw };
    match weir_probe::tcp_socket(local, remote) {
        Ok(Some(s)) if s.tls().is_some_and(|t| t.tx.is_hardware()) => Mode::KtlsHw,
        _ => Mode::KtlsSw,
    }
}

/// A `TCP_INFO` reading as a record keeps it.
pub(crate) fn tcp_facts(info: &weir_sys::TcpInfo) -> TcpFacts {
    TcpFacts {
        srtt_us: info.srtt_us,
        rttvar_us: info.rttvar_us,
        retransmits: info.total_retrans,
        lost: info.lost,
        cwnd: info.snd_cwnd,
        delivery_rate: info.delivery_rate,
        sampled_unix_ms: weir_telemetry::records::unix_ms(std::time::SystemTime::now()),
    }
}

/// The rustls error inside a tokio-rustls I/O error, if any.
pub(crate) fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>())
}

/// Accepts on `listener` until the task is aborted, each connection in a task of its own. A
/// failed accept (EMFILE and friends) backs off instead of spinning.
pub(crate) async fn accept_each<F, Fut>(listener: tokio::net::TcpListener, what: &str, handle: F)
where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        match listener.accept().await {
            Ok((stream, from)) => {
                tokio::spawn(handle(stream, from));
            }
            Err(e) => {
                tracing::warn!(error = %e, listener = what, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Attaches the kTLS ULP before the handshake; on failure this connection stays in userspace
/// TLS, and says so.
pub(crate) fn kernel_ready(socket: &TcpStream, shared: &Shared, id: u64) -> bool {
    match weir_tls::ktls::prepare(socket) {
        Ok(()) => true,
        Err(e) => {
            shared.metrics.ktls_fallbacks.inc();
            tracing::warn!(conn = id, error = %e, "kTLS setup failed on this socket: falling back to userspace TLS");
            false
        }
    }
}

/// Refuses a local app's connection: counted, logged, and reset.
pub(crate) fn refuse_app(app: TcpStream, shared: &Shared, id: u64, reason: Refusal, detail: &dyn std::fmt::Display) {
    shared.refuse(id, Direction::Outbound, reason, detail);
    reset(app);
}

/// Closes the app's connection with a RST: it must see a failure, not an empty response.
pub(crate) fn reset(app: TcpStream) {
    let _ = weir_sys::abort_on_close(std::os::fd::AsFd::as_fd(&app));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A node context with a fresh CA's SVID, for unit tests of what hangs off `Shared`.
    pub(crate) fn shared() -> Shared {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = weir_identity::Ca::init(dir.path(), "weir.local").expect("ca");
        let id = SpiffeId::workload("weir.local", "test", "node").expect("id");
        let store = SvidStore::new(Arc::new(ca), id, Duration::from_secs(600)).expect("store");
        let tls = Arc::new(TlsConfigs::new(store.current(), &store.bundle(), None, false).expect("tls"));
        let support = Support::Unavailable("unit test".into());
        let policy = InboundPolicy::default();
        Shared::new(tls, store, support, weir_forward::Limits::default(), policy, Duration::from_secs(1))
    }
}
