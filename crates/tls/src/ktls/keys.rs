//! The key schedule of one kTLS socket after the switch: rustls (`rustls::kernel`) derives the
//! next traffic secrets, the kernel is handed them.
//!
//! Two events change a key. The peer's KeyUpdate, which the pump reads off the socket: its
//! next receive key is installed, and if it asked, ours is owed: the sending side sends it
//! before its next record (never the reading side, which would then wait on the peer reading
//! while the peer waits on us reading). And our own record count:
//! every key seals at most `records_per_key` records, counted by the kernel (`rec_seq`), after
//! which we send a KeyUpdate and install the next transmit key. On a kernel that cannot take a
//! second key both are the end of the session instead (fail closed: a key is never used past
//! its limit, and records under a key we cannot install are never read).
use super::{Error, Kernel, Rekey};
use rustls::kernel::KernelConnection;
use rustls::ConnectionTrafficSecrets;
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use weir_sys::{TlsCipher, TlsDirection};

/// The key schedule of one kTLS socket. Both directions of a pump share it.
pub struct Keys {
    schedule: Mutex<Box<dyn Schedule>>,
    cipher: TlsCipher,
    rekey: bool,
    records_per_key: u64,
    /// Records sent since the kernel's count was last read, estimated from bytes (a lower
    /// bound: the kernel may cut records shorter).
    unchecked: AtomicU64,
    /// The peer asked for our next key and we have not sent it yet.
    owed: AtomicBool,
    /// Wakes a sender idle on its source when a KeyUpdate becomes owed.
    owed_wake: tokio::sync::Notify,
}

/// What the pump does after sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Go on.
    Continue,
    /// The transmit key reached its record limit: send a KeyUpdate, then [`Keys::next_tx`].
    Rekey,
    /// The limit is reached and this kernel cannot rekey: end the session.
    Exhausted,
}

/// The largest record payload: a send of `n` bytes makes at least `n / MAX_RECORD` records. The
/// kernel may make more (short pipe buffers), so its own count is read well before the limit.
const MAX_RECORD: u64 = 16 * 1024;

impl Keys {
    pub(super) fn new(schedule: Box<dyn Schedule>, cipher: TlsCipher, kernel: &Kernel) -> Self {
        Self {
            schedule: Mutex::new(schedule),
            cipher,
            rekey: kernel.rekey == Rekey::Supported,
            records_per_key: kernel.records_per_key.max(1),
            unchecked: AtomicU64::new(0),
            owed: AtomicBool::new(false),
            owed_wake: tokio::sync::Notify::new(),
        }
    }

    /// The peer's KeyUpdate was read off `socket`: installs its next key. When the peer asked
    /// for ours too, our KeyUpdate becomes owed ([`Keys::take_owed`], [`Keys::owed`]). Where the
    /// kernel cannot rekey this is an error: the records after it are under a key it cannot take.
    pub fn peer_updated(&self, socket: BorrowedFd<'_>, update_requested: bool) -> std::io::Result<()> {
        if !self.rekey {
            return Err(std::io::Error::other("peer sent KeyUpdate; this kernel's TLS cannot rekey: closing"));
        }
        let next = self.lock().update_rx().map_err(std::io::Error::other)?;
        super::install(socket, TlsDirection::Receive, &next).map_err(to_io)?;
        if update_requested {
            self.owed.store(true, Ordering::Release);
            self.owed_wake.notify_one();
        }
        Ok(())
    }

    /// Whether our KeyUpdate is owed, clearing it: `true` means send one now, then
    /// [`Keys::next_tx`], before any other record.
    pub fn take_owed(&self) -> bool {
        self.owed.swap(false, Ordering::AcqRel)
    }

    /// Resolves when a KeyUpdate may have become owed (check [`Keys::take_owed`]): for a sender
    /// waiting on its source, so that the update goes out without waiting for data.
    pub async fn owed(&self) {
        self.owed_wake.notified().await
    }

    /// `bytes` were just sent on `socket`. Reads the kernel's record count each time the
    /// estimate grows by a quarter of the limit (at the default 2^23 records per key: once per
    /// 32 GiB of full records, not per send).
    pub fn sent(&self, socket: BorrowedFd<'_>, bytes: usize) -> std::io::Result<Sent> {
        let estimate = (bytes as u64).div_ceil(MAX_RECORD);
        let unchecked = self.unchecked.fetch_add(estimate, Ordering::Relaxed) + estimate;
        if unchecked < (self.records_per_key / 4).max(1) {
            return Ok(Sent::Continue);
        }
        self.unchecked.store(0, Ordering::Relaxed);
        let seq = weir_sys::tls_tx_record_seq(socket, self.cipher)?;
        Ok(match seq >= self.records_per_key {
            false => Sent::Continue,
            true if self.rekey => Sent::Rekey,
            true => Sent::Exhausted,
        })
    }

    /// Installs our next transmit key. Call right after our KeyUpdate record went out, before
    /// any other record is sent.
    pub fn next_tx(&self, socket: BorrowedFd<'_>) -> std::io::Result<()> {
        let next = self.lock().update_tx().map_err(std::io::Error::other)?;
        super::install(socket, TlsDirection::Transmit, &next).map_err(to_io)?;
        self.unchecked.store(0, Ordering::Relaxed);
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Box<dyn Schedule>> {
        // The schedule holds no invariant a panicking holder could break half-way.
        self.schedule.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("rekey", &self.rekey)
            .field("records_per_key", &self.records_per_key)
            .finish_non_exhaustive()
    }
}

fn to_io(e: Error) -> std::io::Error {
    match e {
        Error::Kernel(e) => e.into(),
        other => std::io::Error::other(other),
    }
}

/// rustls' kernel connection, client or server.
pub trait Schedule: Send {
    /// Our next traffic secret.
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
    /// The peer's next traffic secret.
    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error>;
}

impl<Data: Send> Schedule for KernelConnection<Data> {
    fn update_tx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_tx_secret()
    }

    fn update_rx(&mut self) -> Result<(u64, ConnectionTrafficSecrets), rustls::Error> {
        self.update_rx_secret()
    }
}
