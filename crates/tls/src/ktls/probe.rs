//! The start-up probe: which TLS 1.3 AEADs the kernel takes keys for, and whether it takes a
//! second key on a live socket. Each question is asked of a real loopback socket pair, never
//! answered from the kernel's version string.
use super::{Kernel, Rekey, Support, DEFAULT_RECORDS_PER_KEY};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use weir_sys::{CryptoInfo, TlsCipher, TlsDirection};

/// Blocking: a few loopback connections.
pub(super) fn kernel() -> Support {
    use rustls::crypto::aws_lc_rs::cipher_suite as cs;
    let mut suites = Vec::new();
    let mut rekey = None;
    for suite in [cs::TLS13_AES_128_GCM_SHA256, cs::TLS13_AES_256_GCM_SHA384, cs::TLS13_CHACHA20_POLY1305_SHA256] {
        let Some(cipher) = super::cipher_of(suite) else { continue };
        match keyed_socket(cipher) {
            Ok(socket) => {
                suites.push(suite);
                rekey.get_or_insert_with(|| second_key(&socket, cipher));
            }
            Err(e) => tracing::debug!(?cipher, error = %e, "kernel TLS refuses this cipher"),
        }
    }
    match rekey {
        Some(rekey) => Support::Available(Kernel { suites, rekey, records_per_key: DEFAULT_RECORDS_PER_KEY }),
        None => Support::Unavailable("kernel kTLS accepts none of the TLS 1.3 cipher suites".into()),
    }
}

/// A loopback client socket with a TX key of `cipher` installed (the server end is dropped:
/// nothing is sent).
fn keyed_socket(cipher: TlsCipher) -> std::io::Result<TcpStream> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let client = TcpStream::connect(listener.local_addr()?)?;
    let _server = listener.accept()?;
    weir_sys::attach_tls_ulp(client.as_fd())?;
    weir_sys::set_tls_crypto(client.as_fd(), TlsDirection::Transmit, &probe_key(cipher, 0))?;
    Ok(client)
}

/// Installs a second TX key: kernels that cannot rekey answer `EBUSY`.
fn second_key(socket: &TcpStream, cipher: TlsCipher) -> Rekey {
    match weir_sys::set_tls_crypto(socket.as_fd(), TlsDirection::Transmit, &probe_key(cipher, 1)) {
        Ok(()) => Rekey::Supported,
        Err(e) if e.source.kind() == std::io::ErrorKind::ResourceBusy => {
            Rekey::Unsupported(format!("the kernel cannot rekey kTLS: {e}"))
        }
        Err(e) => Rekey::Unsupported(format!("rekey probe failed: {e}")),
    }
}

fn probe_key(cipher: TlsCipher, fill: u8) -> CryptoInfo {
    let key_len = match cipher {
        TlsCipher::Aes128Gcm => 16,
        TlsCipher::Aes256Gcm | TlsCipher::Chacha20Poly1305 => 32,
    };
    let key = [fill; 32];
    // Lengths match the cipher by construction.
    CryptoInfo::tls13(cipher, &key[..key_len], &[fill; 12], 0).unwrap_or_else(|| unreachable!("probe key length"))
}
