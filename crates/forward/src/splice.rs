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
use weir_tls::ktls::{Keys, Sent};

/// Limits of the pump.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Pipe capacity requested per direction.
    pub pipe_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { pipe_size: 256 << 10 }
    }
}

/// Forwards between `local` (plaintext) and `peer` (kTLS TX and RX installed, `keys` its key
/// schedule) until both directions end. `drained` is plaintext rustls decrypted before the
/// switch; it goes to `local` first.
pub async fn splice_ktls(
    local: TcpStream,
    peer: TcpStream,
    keys: &Keys,
    drained: Vec<u8>,
    tally: &Tally,
    limits: Limits,
) -> Outcome {
    let result = tokio::try_join!(
        local_to_peer(&local, &peer, keys, tally, limits),
        peer_to_local(&peer, keys, &local, drained, tally, limits)
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

async fn local_to_peer(
    local: &TcpStream,
    peer: &TcpStream,
    keys: &Keys,
    tally: &Tally,
    limits: Limits,
) -> Result<(), Outcome> {
    let peer_err = |e| Outcome::from_error(Side::Peer, e);
    // An idle connection holds no pipe: create it when the first bytes are ready. A KeyUpdate
    // the peer asked for goes out meanwhile (both waits are cancel-safe: no bytes move in them).
    // Biased to the data: while it flows, the owed-update wait is never polled (no waiter
    // registered per chunk); `send_owed` before each send catches an update then.
    loop {
        tokio::select! {
            biased;
            ready = local.readable() => break ready.map_err(|e| Outcome::from_error(Side::Local, e))?,
            () = keys.owed() => send_owed(peer, keys).await.map_err(peer_err)?,
        }
    }
    let pipe = Pipe::with_capacity(limits.pipe_size).map_err(|e| Outcome::Failed(Side::Local, e.into()))?;
    loop {
        let n = tokio::select! {
            biased;
            n = fill(local, &pipe, pipe.capacity()) => n.map_err(|e| Outcome::from_error(Side::Local, e))?,
            () = keys.owed() => {
                send_owed(peer, keys).await.map_err(peer_err)?;
                continue;
            }
        };
        if n == 0 {
            close_notify(peer).await.map_err(peer_err)?;
            return Ok(());
        }
        send_owed(peer, keys).await.map_err(peer_err)?;
        empty(&pipe, peer, n).await.map_err(peer_err)?;
        tally.to_peer.inc_by(n as u64);
        if !after_send(peer, keys, n).await.map_err(peer_err)? {
            return Err(Outcome::SessionLimit);
        }
    }
}

/// Before a record goes out on a kTLS socket: sends the KeyUpdate the peer asked for, if one is
/// owed (RFC 8446 §4.6.3: before our next application data).
pub(crate) async fn send_owed(peer: &TcpStream, keys: &Keys) -> io::Result<()> {
    match keys.take_owed() {
        true => key_update(peer, keys).await,
        false => Ok(()),
    }
}

/// After `n` bytes went out on a kTLS socket: at the per-key record limit, sends a KeyUpdate
/// and installs the next key. `Ok(false)`: the limit is reached and this kernel cannot rekey,
/// so the session must end.
pub(crate) async fn after_send(peer: &TcpStream, keys: &Keys, n: usize) -> io::Result<bool> {
    match keys.sent(peer.as_fd(), n)? {
        Sent::Continue => Ok(true),
        Sent::Rekey => {
            key_update(peer, keys).await?;
            Ok(true)
        }
        Sent::Exhausted => Ok(false),
    }
}

/// Sends our KeyUpdate (`update_not_requested`: only our key changes) under the current key,
/// then installs the next: nothing else is sent in between (no await after the record went out).
async fn key_update(peer: &TcpStream, keys: &Keys) -> io::Result<()> {
    let message = [KEY_UPDATE, 0, 0, 1, 0];
    loop {
        peer.writable().await?;
        match peer.try_io(Interest::WRITABLE, || {
            Ok(weir_sys::send_tls_record(peer.as_fd(), RecordType::Handshake, &message)?)
        }) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            other => break other?,
        }
    }
    keys.next_tx(peer.as_fd())
}

async fn peer_to_local(
    peer: &TcpStream,
    keys: &Keys,
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
        match fill_from_ktls(peer, keys, &pipe, pipe.capacity())
            .await
            .map_err(|e| Outcome::from_error(Side::Peer, e))?
        {
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
pub(crate) async fn fill_from_ktls(src: &TcpStream, keys: &Keys, pipe: &Pipe, len: usize) -> io::Result<KtlsRead> {
    loop {
        src.readable().await?;
        match src.try_io(Interest::READABLE, || {
            Ok(weir_sys::splice(src.as_fd(), pipe.write.as_fd(), len, SpliceFlags::Flush)?)
        }) {
            Ok(0) => return Ok(KtlsRead::Truncated),
            Ok(n) => return Ok(KtlsRead::Data(n)),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) if is_control_record(&e) => {
                if let Some(read) = control_record(src, keys).await? {
                    return Ok(read);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// Whether a read error on a kTLS socket means "the next record is not application data".
/// (`EKEYEXPIRED`, a KeyUpdate read but its key not yet installed, cannot reach here: the key is
/// installed right after the record is read, before any other read of the socket.)
pub(crate) fn is_control_record(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(EINVAL | EIO))
}

const EINVAL: i32 = 22;
const EIO: i32 = 5;
const NEW_SESSION_TICKET: u8 = 4;
const KEY_UPDATE: u8 = 24;

/// Reads the record that stopped splice. `None`: handled (a ticket, a KeyUpdate), keep splicing.
pub(crate) async fn control_record(src: &TcpStream, keys: &Keys) -> io::Result<Option<KtlsRead>> {
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
        (RecordType::Handshake, messages) => {
            handshake_messages(src, keys, messages)?;
            Ok(None)
        }
        (RecordType::ApplicationData, _) => Ok(Some(KtlsRead::Record(record.to_vec()))),
        (kind, _) => Err(io::Error::other(format!("unexpected TLS record {kind:?} on a kTLS socket"))),
    }
}

/// Acts on the post-handshake messages of one record: a ticket is ignored (ours send none), a
/// KeyUpdate installs the peer's next key and, when it asks, makes ours owed: the reading side
/// never waits to send ([`send_owed`]).
fn handshake_messages(src: &TcpStream, keys: &Keys, mut messages: &[u8]) -> io::Result<()> {
    while let [kind, a, b, c, rest @ ..] = messages {
        let len = u32::from_be_bytes([0, *a, *b, *c]) as usize;
        let Some((body, next)) = (rest.len() >= len).then(|| rest.split_at(len)) else {
            return Err(io::Error::other("truncated TLS handshake message on a kTLS socket"));
        };
        match (*kind, body) {
            (NEW_SESSION_TICKET, _) => {}
            (KEY_UPDATE, [request @ (0 | 1)]) => keys.peer_updated(src.as_fd(), *request == 1)?,
            (KEY_UPDATE, _) => return Err(io::Error::other("malformed KeyUpdate")),
            (kind, _) => {
                return Err(io::Error::other(format!("unexpected TLS handshake message {kind} on a kTLS socket")))
            }
        }
        messages = next;
    }
    Ok(())
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
