//! Every unsafe syscall Weir makes lives here, behind safe wrappers.
//!
//! Owns: pipes and splice(2), the kernel TLS socket options (`TCP_ULP`, `SOL_TLS`), TLS record
//! control messages (`TLS_SET_RECORD_TYPE` / `TLS_GET_RECORD_TYPE`), abortive close (`SO_LINGER`
//! 0), `TCP_INFO`, the bpf(2) link and pin calls aya does not expose, and kernel feature probes. Does not own any policy about when to call them: that is
//! `weir-forward` and `weir-tls`.
#![allow(unsafe_code, reason = "this crate is the one place for unsafe syscalls")]

pub mod bpf;
mod ktls;
mod pipe;
mod socket;
mod tcp_info;

pub use ktls::{
    attach_tls_ulp, kernel_tls_ulp_available, recv_tls_record, send_tls_record, set_tls_crypto, tls_tx_record_seq,
    CryptoInfo, RecordType, TlsCipher, TlsDirection,
};
pub use pipe::{splice, Pipe, SpliceFlags};
pub use socket::{abort_on_close, raise_fd_limit, shutdown_write};
pub use tcp_info::{tcp_info, tcp_info_if_same, TcpInfo};

/// A failed syscall, naming the call that failed.
#[derive(Debug, thiserror::Error)]
#[error("{call} failed: {source}")]
pub struct SyscallError {
    /// The syscall (and, where useful, its option) that failed.
    pub call: &'static str,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
}

impl SyscallError {
    fn last(call: &'static str) -> Self {
        Self { call, source: std::io::Error::last_os_error() }
    }

    /// The raw errno, if any.
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }

    /// True when the call would have blocked.
    pub fn would_block(&self) -> bool {
        self.source.kind() == std::io::ErrorKind::WouldBlock
    }
}

impl From<SyscallError> for std::io::Error {
    /// Keeps the raw errno (callers branch on it, e.g. EAGAIN, EINVAL); the call name is lost.
    fn from(e: SyscallError) -> Self {
        e.source
    }
}
