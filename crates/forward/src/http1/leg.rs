//! One side of an HTTP/1.1 exchange, seen as "peek what is there, consume exactly what is
//! framing, move bodies": over a socket (plain or kTLS) peeking leaves body bytes in the
//! kernel so they can be spliced; over a userspace TLS stream there is no kernel buffer to peek
//! into, so read-ahead waits in `carry` and bodies are copied (the crypto copy happens anyway).
use crate::splice::{after_send, control_record, empty, fill, fill_from_ktls, is_control_record, send_owed, KtlsRead};
use std::io;
use std::os::fd::AsFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use weir_sys::Pipe;
use weir_tls::ktls::Keys;

/// A userspace byte stream (e.g. rustls over TCP).
pub trait ByteStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ByteStream for T {}

/// Largest peek or copy step.
const STEP: usize = 16 * 1024;

enum Io<'a> {
    /// `ktls`: the key schedule of a kTLS socket; `None` for plaintext.
    Socket {
        tcp: &'a TcpStream,
        ktls: Option<&'a Keys>,
    },
    Stream(&'a mut dyn ByteStream),
}

/// One side of the exchange.
pub struct Leg<'a> {
    io: Io<'a>,
    /// Buffered legs: bytes read ahead and not yet consumed. Peeking legs: the last peek.
    buf: Vec<u8>,
    /// Peeking legs: how much of `buf` the last peek filled.
    peeked: usize,
    /// Where reads land before they are handed out.
    scratch: Vec<u8>,
    /// Move bodies through userspace even where splice could (copy mode, or a socket leg
    /// whose partner is a userspace stream). Such a leg reads ahead like a stream: one read
    /// takes a head and the body behind it, instead of a peek, a read and another read.
    copy: bool,
}

impl<'a> Leg<'a> {
    /// A socket leg: plaintext, or kTLS with both directions installed (`ktls`: its key
    /// schedule). `copy`: bodies to and from it cross userspace anyway (copy mode, or the
    /// other leg is a stream).
    pub fn socket(tcp: &'a TcpStream, ktls: Option<&'a Keys>, copy: bool) -> Self {
        Self { io: Io::Socket { tcp, ktls }, buf: Vec::new(), peeked: 0, scratch: Vec::new(), copy }
    }

    /// A userspace stream leg.
    pub fn stream(stream: &'a mut dyn ByteStream) -> Self {
        Self::stream_with(stream, Vec::new())
    }

    /// A userspace stream leg whose first bytes were already read off it (`read`).
    pub fn stream_with(stream: &'a mut dyn ByteStream, read: Vec<u8>) -> Self {
        Self { io: Io::Stream(stream), buf: read, peeked: 0, scratch: Vec::new(), copy: true }
    }

    /// Bytes this leg read ahead that belong to whatever follows (buffered legs only).
    pub fn take_read_ahead(&mut self) -> Vec<u8> {
        if self.copy {
            std::mem::take(&mut self.buf)
        } else {
            Vec::new()
        }
    }

    /// The unconsumed input, waiting for at least one byte; empty means end of stream (for
    /// kTLS: close_notify).
    pub async fn peek(&mut self) -> io::Result<&[u8]> {
        if self.copy {
            if self.buf.is_empty() {
                self.buf = self.read_more(STEP).await?;
            }
            return Ok(&self.buf);
        }
        let Io::Socket { tcp, ktls } = &self.io else { unreachable!("stream legs are buffered") };
        self.buf.resize(STEP, 0);
        self.peeked = loop {
            match (tcp.peek(&mut self.buf).await, ktls) {
                (Err(e), Some(keys)) if is_control_record(&e) => match control_record(tcp, keys).await? {
                    None => continue,
                    Some(KtlsRead::CloseNotify) => break 0,
                    Some(_) => return Err(io::Error::other("unexpected TLS record between messages")),
                },
                (other, _) => break other?,
            }
        };
        Ok(&self.buf[..self.peeked])
    }

    /// Consumes `n` bytes of what [`Leg::peek`] returned.
    pub async fn consume(&mut self, n: usize) -> io::Result<()> {
        if self.copy {
            self.buf.drain(..n);
            return Ok(());
        }
        let Io::Socket { tcp, .. } = &self.io else { unreachable!("stream legs are buffered") };
        debug_assert!(n <= self.peeked);
        let mut done = 0;
        while done < n {
            tcp.readable().await?;
            match tcp.try_read(&mut self.buf[done..n]) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(m) => done += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        self.peeked = 0;
        Ok(())
    }

    /// Writes all of `bytes` (heads, framing, local answers).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match &mut self.io {
            Io::Socket { tcp, ktls } => {
                before_send(tcp, *ktls).await?;
                crate::splice::write_all(tcp, bytes).await?;
                sent(tcp, *ktls, bytes.len()).await
            }
            Io::Stream(s) => {
                s.write_all(bytes).await?;
                s.flush().await
            }
        }
    }

    fn splice_source(&self) -> Option<(&'a TcpStream, Option<&'a Keys>)> {
        match self.io {
            Io::Socket { tcp, ktls } if !self.copy => Some((tcp, ktls)),
            _ => None,
        }
    }

    fn splice_sink(&self) -> Option<(&'a TcpStream, Option<&'a Keys>)> {
        self.splice_source()
    }

    /// Whether bodies from this leg to `dst` can be spliced (both sockets, no copy mode).
    pub fn splices_to(&self, dst: &Leg<'_>) -> bool {
        self.splice_source().is_some() && dst.splice_sink().is_some()
    }

    /// Reads exactly `n` body bytes into userspace.
    pub async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let chunk = self.read_some(n - out.len()).await?;
            if chunk.is_empty() {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "message body cut short"));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    /// Reads up to `max` body bytes into userspace (copy path), read-ahead first. Empty is end
    /// of stream.
    async fn read_some(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if !self.buf.is_empty() && self.copy {
            let n = self.buf.len().min(max);
            return Ok(self.buf.drain(..n).collect());
        }
        self.read_more(max).await
    }

    /// One read of up to `max` bytes from the stream or socket itself (kTLS control records
    /// handled), through a scratch buffer kept for the leg's life (a fresh zeroed 16 KiB per
    /// read would cost more than the small message it carries). Empty is end of stream.
    async fn read_more(&mut self, max: usize) -> io::Result<Vec<u8>> {
        if self.scratch.len() < STEP {
            self.scratch.resize(STEP, 0);
        }
        let chunk = &mut self.scratch[..max.min(STEP)];
        let n = match &mut self.io {
            Io::Stream(s) => s.read(chunk).await?,
            Io::Socket { tcp, ktls } => loop {
                tcp.readable().await?;
                let read = if ktls.is_some() { tcp.try_read(chunk) } else { try_read_draining(tcp, chunk) };
                match (read, *ktls) {
                    (Err(e), _) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    (Err(e), Some(keys)) if is_control_record(&e) => match control_record(tcp, keys).await? {
                        None => continue,
                        Some(KtlsRead::CloseNotify) => break 0,
                        Some(KtlsRead::Record(bytes)) => return Ok(bytes),
                        Some(_) => return Err(io::ErrorKind::UnexpectedEof.into()),
                    },
                    (other, _) => break other?,
                }
            },
        };
        Ok(chunk[..n].to_vec())
    }
}

/// One read from a plaintext socket. A read shorter than the buffer found the receive queue
/// empty, so the socket's readiness is cleared with it, as tokio's own `poll_read` does:
/// otherwise the next read trusts stale readiness and pays a `recv` that says EAGAIN, one
/// wasted syscall per exchange on the backend leg. The readiness cleared is the one seen before
/// the read (`try_io`), so data that arrives after it is never missed. Not for kTLS, where a
/// read can stop at a record boundary with more records queued.
fn try_read_draining(tcp: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
    let len = buf.len();
    let mut short = None;
    let read = tcp.try_io(Interest::READABLE, || match tcp.try_read(buf)? {
        n if n > 0 && n < len => {
            short = Some(n);
            Err(io::ErrorKind::WouldBlock.into())
        }
        n => Ok(n),
    });
    match read {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => short.ok_or(e),
        other => other,
    }
}

/// Before a write on a kTLS leg: the KeyUpdate its peer asked for goes first.
async fn before_send(tcp: &TcpStream, ktls: Option<&Keys>) -> io::Result<()> {
    match ktls {
        Some(keys) => send_owed(tcp, keys).await,
        None => Ok(()),
    }
}

/// Counts `n` bytes sent on a kTLS leg towards its key's record limit (rekeying there); a
/// plaintext leg has none.
async fn sent(tcp: &TcpStream, ktls: Option<&Keys>, n: usize) -> io::Result<()> {
    match ktls {
        Some(keys) if !after_send(tcp, keys, n).await? => {
            Err(io::Error::other("kTLS session reached its record limit and this kernel cannot rekey"))
        }
        _ => Ok(()),
    }
}

/// Lingering close: after our last write, reads and discards what the other side is still
/// sending (say, the rest of a refused upload) until it ends, for at most `time` or 64 MiB.
/// Closing with unread input would make the kernel send a reset, which can destroy the answer
/// we just sent before the other side reads it.
pub async fn drain(leg: &mut Leg<'_>, time: std::time::Duration) {
    let mut left: u64 = 64 << 20;
    let _ = tokio::time::timeout(time, async {
        while left > 0 {
            match leg.read_some(STEP).await {
                Ok(chunk) if !chunk.is_empty() => left = left.saturating_sub(chunk.len() as u64),
                _ => return,
            }
        }
    })
    .await;
}

/// What a body move cost in userspace copies.
#[derive(Debug, Default, Clone, Copy)]
pub struct Moved {
    /// Body bytes moved.
    pub bytes: u64,
    /// Of those, bytes that crossed userspace.
    pub userspace: u64,
}

/// Moves exactly `len` body bytes (`None`: until `src` ends) from `src` to `dst`: spliced when
/// both legs are sockets, copied otherwise. A short body is an error unless `len` is `None`.
pub async fn move_body(
    src: &mut Leg<'_>,
    dst: &mut Leg<'_>,
    len: Option<u64>,
    pipe: &mut Option<Pipe>,
) -> io::Result<Moved> {
    let mut moved = Moved::default();
    let left = |moved: &Moved| len.map_or(usize::MAX, |l| usize::try_from(l - moved.bytes).unwrap_or(usize::MAX));
    if let (Some((from, from_keys)), Some((to, to_keys))) = (src.splice_source(), dst.splice_sink()) {
        while left(&moved) > 0 {
            if pipe.is_none() {
                *pipe = Some(Pipe::with_capacity(256 << 10)?);
            }
            let Some(p) = pipe.as_ref() else { unreachable!("set above") };
            let want = left(&moved).min(p.capacity());
            let n = if let Some(keys) = from_keys {
                match fill_from_ktls(from, keys, p, want).await? {
                    KtlsRead::Data(n) => n,
                    KtlsRead::Record(bytes) => {
                        // A record splice could not take: rare, and it did cross userspace.
                        let n = bytes.len().min(want);
                        before_send(to, to_keys).await?;
                        crate::splice::write_all(to, &bytes[..n]).await?;
                        sent(to, to_keys, n).await?;
                        moved.bytes += n as u64;
                        moved.userspace += n as u64;
                        if n < bytes.len() {
                            return Err(io::Error::other("record overran the message body"));
                        }
                        continue;
                    }
                    KtlsRead::CloseNotify | KtlsRead::Truncated => 0,
                }
            } else {
                fill(from, p, want).await?
            };
            if n == 0 {
                break;
            }
            before_send(to, to_keys).await?;
            empty(p, to, n).await?;
            sent(to, to_keys, n).await?;
            moved.bytes += n as u64;
        }
    } else {
        while left(&moved) > 0 {
            let chunk = src.read_some(left(&moved)).await?;
            if chunk.is_empty() {
                break;
            }
            dst.write_all(&chunk).await?;
            moved.bytes += chunk.len() as u64;
            moved.userspace += chunk.len() as u64;
        }
    }
    if len.is_some_and(|l| l != moved.bytes) {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "message body cut short"));
    }
    Ok(moved)
}

/// Ends `leg`'s sending half: close_notify + FIN on kTLS, FIN on plaintext, TLS shutdown on a
/// stream.
pub async fn finish(leg: &mut Leg<'_>) -> io::Result<()> {
    match &mut leg.io {
        Io::Socket { tcp, ktls: Some(_) } => crate::splice::close_notify(tcp).await,
        Io::Socket { tcp, ktls: None } => Ok(weir_sys::shutdown_write(tcp.as_fd())?),
        Io::Stream(s) => s.shutdown().await,
    }
}
