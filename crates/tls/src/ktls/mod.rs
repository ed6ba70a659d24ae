//! The switch from userspace TLS to kernel TLS, and the key schedule after it.
//!
//! Order matters, because a failed hand-off after the secrets are extracted would lose the
//! connection: the kernel is probed once at start ([`detect`]), the `tls` ULP is attached to
//! each socket *before* its handshake ([`prepare`], which leaves the socket usable for
//! userspace TLS if it fails), the handshake and the preamble run in userspace on a rustls
//! unbuffered connection that reads the socket one record at a time ([`Staged`]), and only then
//! are keys moved ([`Staged::switch`]). rustls keeps the key schedule ([`Keys`], on its
//! `rustls::kernel` API): it derives the next secrets when a TLS 1.3 KeyUpdate is due.
//!
//! Does not move bytes after the switch: that is `weir-forward`, which calls [`Keys`] when it
//! meets a KeyUpdate or has sent enough records.
use rustls::SupportedCipherSuite;
use std::os::fd::AsFd;
use tokio::net::TcpStream;
use weir_sys::{CryptoInfo, TlsCipher, TlsDirection};

mod keys;
mod probe;
mod staged;

pub use keys::{Keys, Sent};
pub use staged::{accept, connect, Side, Staged};

/// What the kernel offers, decided once at start.
#[derive(Debug, Clone)]
pub enum Support {
    /// kTLS works for these TLS 1.3 suites.
    Available(Kernel),
    /// kTLS cannot be used, and why.
    Unavailable(String),
}

impl Support {
    /// True when kTLS can be used.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available(_))
    }

    /// The kernel's kTLS, where it has one.
    pub fn kernel(&self) -> Option<&Kernel> {
        match self {
            Self::Available(k) => Some(k),
            Self::Unavailable(_) => None,
        }
    }
}

/// The kernel's kTLS as probed at start, and the key policy applied to every session.
#[derive(Debug, Clone)]
pub struct Kernel {
    /// TLS 1.3 suites the kernel accepts keys for.
    pub suites: Vec<SupportedCipherSuite>,
    /// Whether it can replace a key on a live socket (TLS 1.3 KeyUpdate).
    pub rekey: Rekey,
    /// Records sealed under one key before this side rekeys, or, where the kernel cannot,
    /// ends the session (`ktls.records_per_key`).
    pub records_per_key: u64,
}

impl Kernel {
    /// The same kernel with another per-key record limit.
    pub fn with_records_per_key(mut self, records: u64) -> Self {
        self.records_per_key = records;
        self
    }
}

/// Whether the kernel can install a second key on a kTLS socket (Linux ≥ 6.14), found by
/// trying it ([`detect`]), never from the version string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rekey {
    /// KeyUpdate in both directions: the peer's is followed, ours are sent at the record limit.
    Supported,
    /// The kernel refused a second key (`EBUSY`): a peer KeyUpdate closes the connection, and
    /// a session ends at the record limit. The reason as the probe saw it.
    Unsupported(String),
}

impl Rekey {
    /// True when the kernel rekeys.
    pub fn is_supported(&self) -> bool {
        matches!(self, Self::Supported)
    }
}

/// AES-GCM's limit halved, the default of `ktls.records_per_key`.
pub const DEFAULT_RECORDS_PER_KEY: u64 = 1 << 23;

/// Probes the kernel: the `tls` ULP, which TLS 1.3 cipher suites it accepts, whether it rekeys.
pub async fn detect() -> Support {
    if let Err(reason) = weir_sys::kernel_tls_ulp_available() {
        return Support::Unavailable(reason);
    }
    // Blocking loopback socket pairs: cheap, but kept off the runtime's worker.
    match tokio::task::spawn_blocking(probe::kernel).await {
        Ok(support) => support,
        Err(e) => Support::Unavailable(format!("kTLS probe failed: {e}")),
    }
}

/// [`detect`] for callers without a runtime (`weir scan`).
pub fn detect_blocking() -> Support {
    match weir_sys::kernel_tls_ulp_available() {
        Ok(()) => probe::kernel(),
        Err(reason) => Support::Unavailable(reason),
    }
}

/// Attaches the `tls` ULP to a connected socket before its handshake. On error the socket is
/// unchanged and the connection continues in userspace TLS.
pub fn prepare(socket: &TcpStream) -> Result<(), weir_sys::SyscallError> {
    weir_sys::attach_tls_ulp(socket.as_fd())
}

/// A socket whose TLS records are now sealed and opened by the kernel.
#[derive(Debug)]
pub struct Switched {
    /// The socket: plaintext in, records out.
    pub socket: TcpStream,
    /// Its key schedule: the pump calls it on a KeyUpdate and as records go out.
    pub keys: Keys,
    /// Plaintext rustls had already decrypted before the switch: deliver it first.
    pub drained: Vec<u8>,
    /// What the handshake negotiated (the kernel keeps no readable copy for the record).
    pub session: crate::SessionFacts,
}

/// Why the hand-off failed. The connection is lost when this happens (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the rest of a record that was cut by the switch failed.
    #[error("finishing the last userspace record: {0}")]
    Drain(std::io::Error),
    /// rustls would not give up the secrets.
    #[error("extracting secrets: {0}")]
    Secrets(rustls::Error),
    /// The suite or key cannot be expressed to the kernel.
    #[error("key material: {0}")]
    KeyMaterial(String),
    /// The kernel refused a key.
    #[error(transparent)]
    Kernel(#[from] weir_sys::SyscallError),
}

/// The kernel's name for a rustls suite's AEAD.
fn cipher_of(suite: SupportedCipherSuite) -> Option<TlsCipher> {
    use rustls::CipherSuite as C;
    match suite.suite() {
        C::TLS13_AES_128_GCM_SHA256 => Some(TlsCipher::Aes128Gcm),
        C::TLS13_AES_256_GCM_SHA384 => Some(TlsCipher::Aes256Gcm),
        C::TLS13_CHACHA20_POLY1305_SHA256 => Some(TlsCipher::Chacha20Poly1305),
        _ => None,
    }
}

/// The kernel's cipher for a session's traffic secrets.
fn cipher_of_secrets(secrets: &rustls::ConnectionTrafficSecrets) -> Result<TlsCipher, Error> {
    use rustls::ConnectionTrafficSecrets as S;
    match secrets {
        S::Aes128Gcm { .. } => Ok(TlsCipher::Aes128Gcm),
        S::Aes256Gcm { .. } => Ok(TlsCipher::Aes256Gcm),
        S::Chacha20Poly1305 { .. } => Ok(TlsCipher::Chacha20Poly1305),
        _ => Err(Error::KeyMaterial("an AEAD the kernel does not run".into())),
    }
}

/// One direction's key as the kernel takes it.
fn crypto_info(seq: u64, secrets: &rustls::ConnectionTrafficSecrets) -> Result<CryptoInfo, Error> {
    use rustls::ConnectionTrafficSecrets as S;
    let cipher = cipher_of_secrets(secrets)?;
    let (key, iv) = match secrets {
        S::Aes128Gcm { key, iv } | S::Aes256Gcm { key, iv } | S::Chacha20Poly1305 { key, iv } => (key, iv),
        _ => return Err(Error::KeyMaterial("an AEAD the kernel does not run".into())),
    };
    let iv: &[u8; 12] = iv.as_ref().try_into().map_err(|_| Error::KeyMaterial("IV is not 12 bytes".into()))?;
    CryptoInfo::tls13(cipher, key.as_ref(), iv, seq)
        .ok_or_else(|| Error::KeyMaterial(format!("{}-byte key for {cipher:?}", key.as_ref().len())))
}

/// Installs one direction's key on `socket`.
fn install(
    socket: std::os::fd::BorrowedFd<'_>,
    dir: TlsDirection,
    (seq, secrets): &(u64, rustls::ConnectionTrafficSecrets),
) -> Result<(), Error> {
    Ok(weir_sys::set_tls_crypto(socket, dir, &crypto_info(*seq, secrets)?)?)
}
