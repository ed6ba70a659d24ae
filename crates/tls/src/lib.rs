//! The handshake plane: TLS 1.3 mutual authentication with SPIFFE SVIDs, the Weir preamble, and
//! the switch from userspace TLS to kernel TLS.
//!
//! Owns: rustls client/server configurations built from the node's SVID and trust bundle
//! ([`TlsConfigs`]), the SPIFFE server verifier, the preamble codec ([`preamble`]), the host
//! channel's authenticated identity preamble ([`host_channel`]), the built-in CA's network API
//! ([`ca_api`]: server and client) and the kTLS hand-off ([`ktls`]). Does not move bytes after the hand-off: that is `weir-forward`.
#![forbid(unsafe_code)]

pub mod ca_api;
mod configs;
pub mod host_channel;
pub mod ktls;
pub mod preamble;
mod verifier;

pub use configs::{peer_spiffe_id, TlsConfigs};
pub use verifier::SpiffeServerVerifier;

/// The connection's data-path mode: a label on every metric and log line of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Mode {
    /// Kernel TLS with crypto on the NIC.
    KtlsHw,
    /// Kernel TLS with crypto in the kernel.
    KtlsSw,
    /// rustls in userspace (kTLS unavailable).
    Userspace,
    /// A host plane's leg to its DPU: plaintext over the host channel (the PCIe link); the DPU
    /// encrypts on the wire.
    HostChannel,
}

impl Mode {
    /// Stable metric/log label.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::KtlsHw => "ktls_hw",
            Self::KtlsSw => "ktls_sw",
            Self::Userspace => "userspace",
            Self::HostChannel => "host_channel",
        }
    }
}

/// The negotiated TLS version and cipher suite of a session, as connection records show them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionFacts {
    /// `TLSv1_3`, …
    pub version: &'static str,
    /// IANA name, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: &'static str,
}

impl SessionFacts {
    /// Read from a completed handshake.
    pub fn of(conn: &rustls::CommonState) -> Self {
        Self {
            version: conn.protocol_version().and_then(|v| v.as_str()).unwrap_or("unknown"),
            cipher: conn.negotiated_cipher_suite().and_then(|s| s.suite().as_str()).unwrap_or("unknown"),
        }
    }
}

/// A TLS session past its handshake, whichever stream carries it (tokio-rustls in userspace, or
/// a [`ktls::Staged`] connection on its way to the kernel).
pub trait Session {
    /// The negotiated state: peer certificates, version, suite.
    fn tls_state(&self) -> &rustls::CommonState;
}

impl<IO> Session for tokio_rustls::server::TlsStream<IO> {
    fn tls_state(&self) -> &rustls::CommonState {
        self.get_ref().1
    }
}

impl<IO> Session for tokio_rustls::client::TlsStream<IO> {
    fn tls_state(&self) -> &rustls::CommonState {
        self.get_ref().1
    }
}

impl<C: ktls::Side> Session for ktls::Staged<C> {
    fn tls_state(&self) -> &rustls::CommonState {
        self.state()
    }
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_label())
    }
}
