//! Plaintext socket <-> kTLS socket with splice(2), both directions, driven by tokio readiness.
//!
//! Each direction owns one pipe: fill it from the source (up to its capacity), then empty it
//! into the destination, so a pipe is always empty before the next fill and `EAGAIN` always
//! belongs to the socket whose readiness we are waiting on.
use crate::{abort_both, Outcome, Side, Tally};
use std::io;
use std::os::fd::AsFd;
use tokio::io::Interest;
use tokio::net::TcpStream;
use weir_sys::{Pipe, RecordType, SpliceFlags};

/// Limits for one kTLS session.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes this side may send on one session before it must end (AES-GCM record limit;
    /// this kernel path cannot rekey).
    pub max_session_bytes: u64,
    /// Pipe capacity requested per direction.
    pub pipe_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // 16 GiB: at 1 KiB per record that is 2^24 records, under TLS 1.3's AES-GCM limit of
        // 2^24.5; splice fills records to 16 KiB, so the real margin is much larger.
        Self { max_session_bytes: 16 << 30, pipe_size: 256 << 10 }
    }
}

/// Forwards between `local` (plaintext) and `peer` (kTLS TX and RX installed) until both
/// directions end. `drained` is plaintext rustls decrypted before the switch; it goes to
/// `local` first.
pub async fn splice_ktls(
    local: TcpStream,
    peer: TcpStream,
    drained: Vec<u8>,
    tally: &Tally,
    limits: Limits,
) -> Outcome {
    let result = tokio::try_join!(
        local_to_peer(&local, &peer, tally, limits),
        peer_to_local(&peer, &local, drained, tally, limits)
    );
    tally.note_close(&peer);
    match result {
        Ok(_) => Outcome::Closed,
        Err(outcome) => {
            abort_both(&local, &peer);
            outcome
        }
    }
}

async fn local_to_peer(local: &TcpStream, peer: &TcpStream, tally: &Tally, limits: Limits) -> Result<(), Outcome> {
    // An idle connection holds no pipe: create it when the first bytes are ready.
    local.readable().await.map_err(|e| Outcome::from_error(Side::Local, e))?;
    let pipe = Pipe::with_capacity(limits.pipe_size).map_err(|e| Outcome::Failed(Side::Local, e.into()))?;
    let mut sent = 0u64;
    loop {
        let n = fill(local, &pipe, pipe.capacity()).await.map_err(|e| Outcome::from_error(Side::Local, e))?;
        if n == 0 {
            close_notify(peer).await.map_err(|e| Outcome::from_error(Side::Peer, e))?;
            return Ok(());
        }
        sent += n as u64;
        if sent > limits.max_session_bytes {
            return Err(Outcome::SessionLimit);
        }
        empty(&pipe, peer, n).await.map_err(|e| Outcome::from_error(Side::Peer, e))?;
        tally.to_peer.inc_by(n as u64);
    }
}

async fn peer_to_local(
    peer: &TcpStream,
    local: &TcpStream,
    drained: Vec<u8>,
    tally: &Tally,
    limits: Limits,
) -> Result<(), Outcome> {
    if !drained.is_empty() {
        write_all(local, &drained).await.map_err(|e| Outcome::from_error(Side::Local, e))?;
        tally.from_peer.inc_by(drained.len() as u64);
        tally.userspace.inc_by(drained.len() as u64);
    }
    peer.readable().await.map_err(|e| Outcome::from_error(Side::Peer, e))?;
    let pipe = Pipe::with_capacity(limits.pipe_size).map_err(|e| Outcome::Failed(Side::Local, e.into()))?;
    loop {
        match fill_from_ktls(peer, &pipe, pipe.capacity()).await.map_err(|e| Outcome::from_error(Side::Peer, e))? {
            KtlsRead::Data(n) => {
                empty(&pipe, local, n).await.map_err(|e| Outcome::from_error(Side::Local, e))?;
                tally.from_peer.inc_by(n as u64);
            }
            KtlsRead::Record(bytes) => {
                write_all(local, &bytes).await.map_err(|e| Outcome::from_error(Side::Local, e))?;
                tally.from_peer.inc_by(bytes.len() as u64);
                tally.userspace.inc_by(bytes.len() as u64);
            }
            KtlsRead::CloseNotify => {
                weir_sys::shutdown_write(local.as_fd()).map_err(|e| Outcome::from_error(Side::Local, e.into()))?;
                return Ok(());
            }
            KtlsRead::Truncated => {
                return Err(Outcome::Failed(
                    Side::Peer,
                    io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed without close_notify"),
                ));
            }
        }
    }
}

/// Source socket -> pipe, at most `len` bytes. Returns bytes moved; 0 is end of stream.
pub(crate) async fn fill(src: &TcpStream, pipe: &Pipe, len: usize) -> io::Result<usize> {
    loop {
        src.readable().await?;
        match src.try_io(Interest::READABLE, || {
            Ok(weir_sys::splice(src.as_fd(), pipe.write.as_fd(), len, SpliceFlags::Flush)?)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => return other,
        }
    }
}

pub(crate) enum KtlsRead {
    Data(usize),
    Record(Vec<u8>),
    CloseNotify,
    Truncated,
}

/// kTLS socket -> pipe, at most `len` bytes. splice stops at any non-data record (EINVAL, or
/// EIO on some kernels): such a record is read with recvmsg and acted on here.
pub(crate) async fn fill_from_ktls(src: &TcpStream, pipe: &Pipe, len: usize) -> io::Result<KtlsRead> {
    loop {
        src.readable().await?;
        match src.try_io(Interest::READABLE, || {
            Ok(weir_sys::splice(src.as_fd(), pipe.write.as_fd(), len, SpliceFlags::Flush)?)
        }) {
            Ok(0) => return Ok(KtlsRead::Truncated),
            Ok(n) => return Ok(KtlsRead::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if is_control_record(&e) => {
                if let Some(read) = control_record(src).await? {
                    return Ok(read);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a read error on a kTLS socket means "the next record is not application data".
pub(crate) fn is_control_record(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EINVAL | EIO))
}

const EINVAL: i32 = 22;
const EIO: i32 = 5;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

/// Reads the record that stopped splice. `None`: ignorable, keep splicing.
pub(crate) async fn control_record(src: &TcpStream) -> io::Result<Option<KtlsRead>> {
    let mut buf = vec![0u8; 16 * 1024 + 256];
    let (kind, n) = loop {
        src.readable().await?;
        match src.try_io(Interest::READABLE, || Ok(weir_sys::recv_tls_record(src.as_fd(), &mut buf)?)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => break other?,
        }
    };
    let record = &buf[..n];
    match (kind, record) {
        (RecordType::Alert, [_, 0, ..]) => Ok(Some(KtlsRead::CloseNotify)),
        (RecordType::Alert, [_, desc, ..]) => Err(io::Error::other(format!("peer sent TLS alert {desc}"))),
        (RecordType::Handshake, [NEW_SESSION_TICKET, ..]) => Ok(None),
        (RecordType::Handshake, [KEY_UPDATE, ..]) => {
            Err(io::Error::other("peer sent KeyUpdate; kernel TLS cannot rekey: closing"))
        }
        (RecordType::ApplicationData, _) => Ok(Some(KtlsRead::Record(record.to_vec()))),
        (kind, _) => Err(io::Error::other(format!("unexpected TLS record {kind:?} on a kTLS socket"))),
    }
}

/// Pipe -> destination socket, exactly `n` bytes.
pub(crate) async fn empty(pipe: &Pipe, dst: &TcpStream, n: usize) -> io::Result<()> {
    let mut left = n;
    while left > 0 {
        dst.writable().await?;
        match dst.try_io(Interest::WRITABLE, || {
            Ok(weir_sys::splice(pipe.read.as_fd(), dst.as_fd(), left, SpliceFlags::Flush)?)
        }) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(m) => left -= m,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) async fn write_all(dst: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        dst.writable().await?;
        match dst.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Ends our sending half in TLS terms (close_notify), then in TCP terms (FIN).
pub(crate) async fn close_notify(peer: &TcpStream) -> io::Result<()> {
    loop {
        peer.writable().await?;
        match peer
            .try_io(Interest::WRITABLE, || Ok(weir_sys::send_tls_record(peer.as_fd(), RecordType::Alert, &[1, 0])?))
        {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => break other?,
        }
    }
    Ok(weir_sys::shutdown_write(peer.as_fd())?)
}
