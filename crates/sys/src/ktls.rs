//! Kernel TLS socket options and TLS record control messages.
//!
//! Owns the kernel's key layout (`struct tls12_crypto_info_*` of `linux/tls.h`, TLS 1.3 only):
//! [`CryptoInfo`] is built from raw key bytes, so this crate knows nothing of rustls.
use crate::SyscallError;
use std::os::fd::{AsRawFd, BorrowedFd};

const SOL_TLS: libc::c_int = 282;
const TLS_TX: libc::c_int = 1;
const TLS_RX: libc::c_int = 2;
const TLS_SET_RECORD_TYPE: libc::c_int = 1;
const TLS_GET_RECORD_TYPE: libc::c_int = 2;

/// Which half of the connection a key is for.
#[derive(Debug, Clone, Copy)]
pub enum TlsDirection {
    /// Records this socket sends.
    Transmit,
    /// Records this socket receives.
    Receive,
}

/// TLS record content types (RFC 8446 §5.1) as they appear in kTLS control messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    /// An alert (close_notify or a fatal error).
    Alert,
    /// A post-handshake message (NewSessionTicket, KeyUpdate).
    Handshake,
    /// Application data.
    ApplicationData,
    /// Anything else the kernel reports.
    Other(u8),
}

impl RecordType {
    fn from_wire(b: u8) -> Self {
        match b {
            21 => Self::Alert,
            22 => Self::Handshake,
            23 => Self::ApplicationData,
            other => Self::Other(other),
        }
    }

    fn to_wire(self) -> u8 {
        match self {
            Self::Alert => 21,
            Self::Handshake => 22,
            Self::ApplicationData => 23,
            Self::Other(b) => b,
        }
    }
}

/// Attaches the `tls` upper-layer protocol to an ESTABLISHED TCP socket. Until keys are set
/// the socket passes bytes through unchanged, so this can be done before the handshake: a
/// failure here leaves the connection usable for userspace TLS.
pub fn attach_tls_ulp(fd: BorrowedFd<'_>) -> Result<(), SyscallError> {
    let name = b"tls";
    // SAFETY: name points to 3 valid bytes; TCP_ULP takes a non-terminated string and length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_TCP,
            libc::TCP_ULP,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(SyscallError::last("setsockopt(TCP_ULP, tls)"));
    }
    Ok(())
}

/// Installs one direction's traffic key into kTLS. On a kernel that can rekey (Linux ≥ 6.14,
/// TLS 1.3) a second call for the same direction replaces the key; older kernels answer
/// `EBUSY`.
pub fn set_tls_crypto(fd: BorrowedFd<'_>, dir: TlsDirection, info: &CryptoInfo) -> Result<(), SyscallError> {
    let (opt, call) = match dir {
        TlsDirection::Transmit => (TLS_TX, "setsockopt(SOL_TLS, TLS_TX)"),
        TlsDirection::Receive => (TLS_RX, "setsockopt(SOL_TLS, TLS_RX)"),
    };
    let bytes = info.as_bytes();
    // SAFETY: bytes is one initialised tls12_crypto_info_* struct, valid for its length.
    let rc = unsafe {
        libc::setsockopt(fd.as_raw_fd(), SOL_TLS, opt, bytes.as_ptr().cast(), bytes.len() as libc::socklen_t)
    };
    if rc < 0 {
        return Err(SyscallError::last(call));
    }
    Ok(())
}

/// The sequence number of the next record this socket will send under its current TX key
/// (`getsockopt(SOL_TLS, TLS_TX)`): the count of records sealed under that key. The kernel
/// answers only a buffer of exactly the installed cipher's layout (else `EINVAL`).
pub fn tls_tx_record_seq(fd: BorrowedFd<'_>, cipher: TlsCipher) -> Result<u64, SyscallError> {
    let mut buf = [0u8; 56];
    let mut len = cipher.info_len() as libc::socklen_t;
    // SAFETY: buf is writable for len bytes; the kernel writes at most len and updates it.
    let rc = unsafe { libc::getsockopt(fd.as_raw_fd(), SOL_TLS, TLS_TX, buf.as_mut_ptr().cast(), &mut len) };
    if rc < 0 {
        return Err(SyscallError::last("getsockopt(SOL_TLS, TLS_TX)"));
    }
    let len = (len as usize).min(buf.len());
    // rec_seq is the last field of every tls12_crypto_info_* layout.
    let seq = match buf[..len].last_chunk::<8>() {
        Some(seq) if len > 4 => u64::from_be_bytes(*seq),
        _ => {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{len}-byte crypto info"));
            return Err(SyscallError { call: "getsockopt(SOL_TLS, TLS_TX)", source });
        }
    };
    // The kernel hands the key back too: do not leave it on the stack.
    zeroize(&mut buf);
    Ok(seq)
}

/// A TLS 1.3 AEAD the kernel can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsCipher {
    /// `TLS_CIPHER_AES_GCM_128`.
    Aes128Gcm,
    /// `TLS_CIPHER_AES_GCM_256`.
    Aes256Gcm,
    /// `TLS_CIPHER_CHACHA20_POLY1305`.
    Chacha20Poly1305,
}

impl TlsCipher {
    fn layout(self) -> (u16, usize, usize) {
        // (cipher_type, key length, salt length): the salt is the head of the 12-byte IV,
        // the rest goes in `iv`.
        match self {
            Self::Aes128Gcm => (51, 16, 4),
            Self::Aes256Gcm => (52, 32, 4),
            Self::Chacha20Poly1305 => (54, 32, 0),
        }
    }

    /// The size of this cipher's `tls12_crypto_info_*`.
    fn info_len(self) -> usize {
        let (_, key, _) = self.layout();
        // header, IV (with the salt split off), key, sequence number
        4 + TLS13_IV_LEN + key + 8
    }
}

const TLS_1_3_VERSION: u16 = 0x0304;
const TLS13_IV_LEN: usize = 12;

/// One direction's TLS 1.3 key material, laid out as the kernel's `tls12_crypto_info_*`
/// (`{version, cipher_type}`, `iv`, `key`, `salt`, `rec_seq`; all byte arrays, no padding).
/// Zeroed when dropped.
pub struct CryptoInfo {
    bytes: [u8; 56],
    len: usize,
}

impl CryptoInfo {
    /// Key material for `cipher` from the traffic key, the 12-byte IV and the sequence number
    /// of the next record. `None` when the key length does not fit the cipher.
    pub fn tls13(cipher: TlsCipher, key: &[u8], iv: &[u8; TLS13_IV_LEN], seq: u64) -> Option<Self> {
        let (kind, key_len, salt_len) = cipher.layout();
        if key.len() != key_len {
            return None;
        }
        let mut bytes = [0u8; 56];
        let mut at = 0;
        let mut put = |b: &[u8]| {
            bytes[at..at + b.len()].copy_from_slice(b);
            at += b.len();
        };
        put(&TLS_1_3_VERSION.to_ne_bytes());
        put(&kind.to_ne_bytes());
        put(&iv[salt_len..]);
        put(key);
        put(&iv[..salt_len]);
        put(&seq.to_be_bytes());
        Some(Self { bytes, len: at })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Drop for CryptoInfo {
    fn drop(&mut self) {
        zeroize(&mut self.bytes);
    }
}

impl std::fmt::Debug for CryptoInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CryptoInfo(..)")
    }
}

fn zeroize(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: b is a valid, aligned, exclusive reference; a volatile write is not elided.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
}

/// Receives one record from a kTLS RX socket with its content type. Used when splice stops at a
/// non-data record (EINVAL/EIO): the record must be consumed before data flows again.
pub fn recv_tls_record(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(RecordType, usize), SyscallError> {
    let mut cbuf = [0u64; 8];
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&cbuf) as _;
    // SAFETY: msg points at iov/cbuf, which live until the call returns.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(SyscallError::last("recvmsg(TLS_GET_RECORD_TYPE)"));
    }
    let mut kind = RecordType::ApplicationData;
    // SAFETY: the CMSG_* macros walk the control buffer the kernel filled, bounded by
    // msg_controllen.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == SOL_TLS && (*c).cmsg_type == TLS_GET_RECORD_TYPE {
                kind = RecordType::from_wire(*libc::CMSG_DATA(c));
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((kind, n as usize))
}

/// Sends one record of the given type on a kTLS TX socket (e.g. a close_notify alert).
pub fn send_tls_record(fd: BorrowedFd<'_>, kind: RecordType, payload: &[u8]) -> Result<(), SyscallError> {
    let mut cbuf = [0u64; 4];
    let mut iov = libc::iovec { iov_base: payload.as_ptr() as *mut libc::c_void, iov_len: payload.len() };
    // SAFETY: msghdr is plain old data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE is a pure size computation.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(1) } as _;
    // SAFETY: cbuf is large enough for one cmsg carrying one byte (CMSG_SPACE(1) <= 32).
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = SOL_TLS;
        (*c).cmsg_type = TLS_SET_RECORD_TYPE;
        (*c).cmsg_len = libc::CMSG_LEN(1) as _;
        *libc::CMSG_DATA(c) = kind.to_wire();
    }
    // SAFETY: msg points at iov/cbuf, which live until the call returns; the kernel only reads
    // the payload.
    let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if n < 0 {
        return Err(SyscallError::last("sendmsg(TLS_SET_RECORD_TYPE)"));
    }
    Ok(())
}

/// Whether this kernel can attach the `tls` ULP. Checks the loaded ULPs first, then tries a
/// real attach on a loopback socket pair (which also autoloads the module).
pub fn kernel_tls_ulp_available() -> Result<(), String> {
    let loaded = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    if loaded.split_whitespace().any(|u| u == "tls") {
        return Ok(());
    }
    let probe = || -> std::io::Result<()> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let client = std::net::TcpStream::connect(listener.local_addr()?)?;
        let _server = listener.accept()?;
        use std::os::fd::AsFd;
        attach_tls_ulp(client.as_fd()).map_err(std::io::Error::from)
    };
    probe().map_err(|e| format!("kernel lacks the tls ULP (CONFIG_TLS): {e}"))
}
