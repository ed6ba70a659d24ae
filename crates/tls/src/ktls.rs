//! The switch from userspace TLS to kernel TLS.
//!
//! Order matters, because a failed hand-off after the secrets are extracted would lose the
//! connection: the kernel is probed once at start ([`detect`]), the `tls` ULP is attached to
//! each socket *before* its handshake ([`prepare`], which leaves the socket usable for
//! userspace TLS if it fails), and only then are keys moved ([`switch_client`],
//! [`switch_server`]).
use rustls::{ExtractedSecrets, SupportedCipherSuite};
use std::os::fd::AsFd;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use weir_sys::TlsDirection;

pub use ::ktls::CorkStream;

/// What the kernel offers, decided once at start.
#[derive(Debug, Clone)]
pub enum Support {
    /// kTLS works for these TLS 1.3 suites.
    Available(Vec<SupportedCipherSuite>),
    /// kTLS cannot be used, and why.
    Unavailable(String),
}

impl Support {
    /// True when kTLS can be used.
    pub fn is_available(&self) -> bool {
        matches!(self, Self::Available(_))
    }
}

/// Probes the kernel: the `tls` ULP, then which TLS 1.3 cipher suites it accepts.
pub async fn detect() -> Support {
    if let Err(reason) = weir_sys::kernel_tls_ulp_available() {
        return Support::Unavailable(reason);
    }
    let compatible = match ::ktls::CompatibleCiphers::new().await {
        Ok(c) => c,
        Err(e) => return Support::Unavailable(format!("kTLS cipher probe failed: {e}")),
    };
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let suites: Vec<_> =
        [cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256]
            .into_iter()
            .filter(|s| compatible.is_compatible(*s))
            .collect();
    if suites.is_empty() {
        return Support::Unavailable("kernel kTLS accepts none of the TLS 1.3 cipher suites".into());
    }
    Support::Available(suites)
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
    /// Plaintext rustls had already decrypted before the switch: deliver it first.
    pub drained: Vec<u8>,
    /// What the handshake negotiated (the kernel keeps no readable copy for the record).
    pub session: crate::SessionFacts,
}

/// Why the hand-off failed. The connection is lost when this happens (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading rustls' remaining plaintext failed.
    #[error("draining userspace TLS: {0}")]
    Drain(std::io::Error),
    /// rustls would not give up the secrets.
    #[error("extracting secrets: {0}")]
    Secrets(rustls::Error),
    /// No cipher suite negotiated.
    #[error("no negotiated cipher suite")]
    NoSuite,
    /// The suite or key cannot be expressed to the kernel.
    #[error("key material: {0}")]
    KeyMaterial(String),
    /// The kernel refused a key.
    #[error(transparent)]
    Kernel(#[from] weir_sys::SyscallError),
}

/// Moves a client connection's keys into the kernel.
pub async fn switch_client(mut tls: tokio_rustls::client::TlsStream<CorkStream<TcpStream>>) -> Result<Switched, Error> {
    tls.get_mut().0.corked = true;
    let drained = drain(&mut tls).await?;
    let (io, conn) = tls.into_inner();
    hand_over(io.io, conn.into(), drained)
}

/// Moves a server connection's keys into the kernel.
pub async fn switch_server(mut tls: tokio_rustls::server::TlsStream<CorkStream<TcpStream>>) -> Result<Switched, Error> {
    tls.get_mut().0.corked = true;
    let drained = drain(&mut tls).await?;
    let (io, conn) = tls.into_inner();
    hand_over(io.io, conn.into(), drained)
}

/// Reads what rustls has buffered, up to the next record boundary (the corked stream then
/// reports end of input).
async fn drain<S: AsyncRead + Unpin>(s: &mut S) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(out),
            Err(e) => return Err(Error::Drain(e)),
        }
    }
}

/// Moves a drained connection's keys into the kernel.
fn hand_over(socket: TcpStream, conn: rustls::Connection, drained: Vec<u8>) -> Result<Switched, Error> {
    let suite = conn.negotiated_cipher_suite().ok_or(Error::NoSuite)?;
    let session = crate::SessionFacts::of(&conn);
    install(&socket, suite, conn.dangerous_extract_secrets().map_err(Error::Secrets)?)?;
    Ok(Switched { socket, drained, session })
}

fn install(socket: &TcpStream, suite: SupportedCipherSuite, secrets: ExtractedSecrets) -> Result<(), Error> {
    let key = |s| ::ktls::CryptoInfo::from_rustls(suite, s).map_err(|e| Error::KeyMaterial(e.to_string()));
    weir_sys::set_tls_crypto(socket.as_fd(), TlsDirection::Transmit, &key(secrets.tx)?)?;
    weir_sys::set_tls_crypto(socket.as_fd(), TlsDirection::Receive, &key(secrets.rx)?)?;
    Ok(())
}
