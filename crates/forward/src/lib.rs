//! The data plane's L4 pump between a local plaintext socket (app or backend) and the mesh
//! leg to a peer node.
//!
//! Owns: [`splice_ktls`] (socket -> pipe -> socket in both directions, no byte enters
//! userspace, kTLS control records handled), [`splice_plain`] (the same between two plaintext
//! sockets: a host plane's leg to its DPU) and [`copy_tls`] (userspace TLS fallback), with
//! half-close and reset propagation and incremental byte counts; and [`http1`], the same
//! legs carrying HTTP/1.1 with only heads read into userspace. Does not own handshakes or
//! policy.
#![forbid(unsafe_code)]

mod copy;
pub mod http1;
mod plain;
mod splice;

pub use copy::{copy_tls, TcpBacked};
pub use plain::splice_plain;
pub use splice::{splice_ktls, Limits};

use prometheus_client::metrics::counter::Counter;

/// Per-connection byte counters, bumped as bytes move (visible while the connection is open).
#[derive(Debug, Clone, Default)]
pub struct Tally {
    /// Plaintext bytes sent to the peer node.
    pub to_peer: FlowCounter,
    /// Plaintext bytes received from the peer node.
    pub from_peer: FlowCounter,
    /// Bytes that crossed userspace (0 on the splice path but for rare control records; on
    /// the HTTP path, heads and chunk framing always do).
    pub userspace: Counter,
    /// HTTP body bytes that crossed userspace: 0 when both legs splice, the body size where a
    /// leg is userspace TLS or the listener is in copy mode.
    pub userspace_body: Counter,
    /// The mesh leg's `TCP_INFO` read just before the pump let go of it.
    pub tcp_at_close: std::sync::Arc<std::sync::OnceLock<weir_sys::TcpInfo>>,
}

impl Tally {
    /// Reads the mesh leg's `TCP_INFO` for the connection's closing record; the first call
    /// wins (the HTTP path may hand over to the L4 pump, which calls it again).
    pub fn note_close(&self, peer: &tokio::net::TcpStream) {
        use std::os::fd::AsFd;
        if self.tcp_at_close.get().is_none() {
            if let Ok(info) = weir_sys::tcp_info(peer.as_fd()) {
                let _ = self.tcp_at_close.set(info);
            }
        }
    }
}

/// Bytes of one flow: a metric family's counter (shared by every connection with the same
/// labels) and this connection's own total.
#[derive(Debug, Clone, Default)]
pub struct FlowCounter {
    family: Counter,
    own: Counter,
}

impl FlowCounter {
    /// Counts into `family` as well as into this connection's own total.
    pub fn new(family: Counter) -> Self {
        Self { family, own: Counter::default() }
    }

    /// Adds `n` bytes.
    pub fn inc_by(&self, n: u64) {
        self.family.inc_by(n);
        self.own.inc_by(n);
    }

    /// This connection's total.
    pub fn get(&self) -> u64 {
        self.own.get()
    }

    /// A handle on this connection's own total (for its record).
    pub fn own(&self) -> Counter {
        self.own.clone()
    }
}

/// Which leg of the hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The plaintext socket to the local app or backend.
    Local,
    /// The mesh leg to the peer node.
    Peer,
}

/// How a forwarded connection ended.
#[derive(Debug)]
pub enum Outcome {
    /// Both directions reached end of stream in order.
    Closed,
    /// One leg was reset; the other was reset in turn.
    Reset(Side),
    /// One leg failed otherwise (truncation, fatal alert, I/O error); both were reset.
    Failed(Side, std::io::Error),
    /// The kTLS session reached its byte limit (the kernel cannot rekey); both were reset so
    /// the app reconnects on a fresh session.
    SessionLimit,
}

impl Outcome {
    /// A stable metric label.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Reset(Side::Local) => "reset_local",
            Self::Reset(Side::Peer) => "reset_peer",
            Self::Failed(..) => "error",
            Self::SessionLimit => "session_limit",
        }
    }

    fn from_error(side: Side, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe
            | std::io::ErrorKind::ConnectionAborted => Self::Reset(side),
            _ => Self::Failed(side, e),
        }
    }
}

/// Resets both sockets on drop-close: a failure on one leg must not look like a clean EOF on
/// the other.
pub fn abort_both(a: &tokio::net::TcpStream, b: &tokio::net::TcpStream) {
    use std::os::fd::AsFd;
    for s in [a, b] {
        if let Err(e) = weir_sys::abort_on_close(s.as_fd()) {
            tracing::debug!(error = %e, "could not arm reset on close");
        }
    }
}
