//! A TLS connection on its way to the kernel: the handshake and the preamble run in userspace
//! on a rustls *unbuffered* connection, the only kind rustls hands to the kernel
//! (`dangerous_into_kernel_connection`).
//!
//! Once the handshake is done the socket is read one record at a time (header, then exactly
//! its length), so at the switch every byte past the last record rustls opened is still in the
//! kernel's receive queue, where kTLS finds it. A record the switch would cut (possible only
//! from a handshake read) is read to its end and opened here first.
use super::{Error, Kernel, Keys, Switched};
use rustls::client::{ClientConnectionData, UnbufferedClientConnection};
use rustls::kernel::KernelConnection;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{ClientConfig, CommonState, ExtractedSecrets, ServerConfig};
use std::future::poll_fn;
use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use weir_sys::TlsDirection;

/// A TLS record header: type, version, length.
const HEADER: usize = 5;
/// Handshake reads take what is there, up to this much at a time.
const HANDSHAKE_READ: usize = 16 * 1024;
/// Refuse to buffer a handshake larger than this (a peer's certificate chain must fit).
const MAX_INCOMING: usize = 256 * 1024;

/// Handshakes as a client on `socket` (the `tls` ULP attached, see [`super::prepare`]).
/// Errors are rustls' own, wrapped as `io::ErrorKind::InvalidData`, as tokio-rustls does.
pub async fn connect(
    config: Arc<ClientConfig>,
    name: rustls::pki_types::ServerName<'static>,
    socket: TcpStream,
) -> io::Result<Staged<UnbufferedClientConnection>> {
    let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
    Staged::handshake(conn, socket).await
}

/// Handshakes as a server on `socket` (the `tls` ULP attached).
pub async fn accept(config: Arc<ServerConfig>, socket: TcpStream) -> io::Result<Staged<UnbufferedServerConnection>> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    Staged::handshake(conn, socket).await
}

/// A handshaken TLS connection still in userspace: read and write it (the preamble), then
/// [`Staged::switch`] it to the kernel.
pub struct Staged<C> {
    conn: C,
    socket: TcpStream,
    /// Ciphertext read, not yet discarded by rustls.
    incoming: Vec<u8>,
    filled: usize,
    /// Ciphertext to send; `sent` of it already went.
    outgoing: Vec<u8>,
    sent: usize,
    /// Plaintext opened, `taken` of it already read.
    plaintext: Vec<u8>,
    taken: usize,
    peer_closed: bool,
    close_queued: bool,
}

/// What to do when rustls allows application data.
enum Action<'a> {
    Nothing,
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Where [`Staged::advance`] stopped.
enum Stop {
    /// rustls needs more ciphertext.
    Input,
    /// Application data may flow; `wrote` plaintext bytes were encrypted.
    Traffic { wrote: usize },
    /// The peer sent close_notify.
    PeerClosed,
}

impl<C: Side> Staged<C> {
    async fn handshake(conn: C, socket: TcpStream) -> io::Result<Self> {
        let mut s = Self {
            conn,
            socket,
            incoming: vec![0; HANDSHAKE_READ],
            filled: 0,
            outgoing: Vec::new(),
            sent: 0,
            plaintext: Vec::new(),
            taken: 0,
            peer_closed: false,
            close_queued: false,
        };
        loop {
            let stop = match s.advance(Action::Nothing) {
                Ok(stop) => stop,
                Err(e) => return Err(s.fail(e).await),
            };
            poll_fn(|cx| s.poll_send(cx)).await?;
            match stop {
                Stop::Traffic { .. } if !s.conn.state().is_handshaking() => return Ok(s),
                Stop::PeerClosed => {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed the handshake"))
                }
                _ => {
                    if poll_fn(|cx| s.poll_fill(cx)).await? == 0 {
                        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "peer closed during the handshake"));
                    }
                }
            }
        }
    }

    /// The negotiated session (peer certificates, suite, version).
    pub fn state(&self) -> &CommonState {
        self.conn.state()
    }

    /// Moves the keys into the kernel. rustls keeps the key schedule ([`Keys`]); plaintext it
    /// already opened is returned in [`Switched::drained`].
    pub async fn switch(mut self, kernel: &Kernel) -> Result<Switched, Error> {
        // Whatever rustls still holds goes out, and a record already begun is read to its end:
        // the kernel takes over at a record boundary, with nothing left to send.
        loop {
            self.advance(Action::Nothing).map_err(|e| Error::Drain(tls_error(e)))?;
            poll_fn(|cx| self.poll_send(cx)).await.map_err(Error::Drain)?;
            if self.filled == 0 {
                break;
            }
            if poll_fn(|cx| self.poll_fill(cx)).await.map_err(Error::Drain)? == 0 {
                return Err(Error::Drain(io::ErrorKind::UnexpectedEof.into()));
            }
        }
        let session = crate::SessionFacts::of(self.conn.state());
        let Self { conn, socket, mut plaintext, taken, .. } = self;
        let (secrets, schedule) = conn.into_kernel().map_err(Error::Secrets)?;
        let cipher = super::cipher_of_secrets(&secrets.tx.1)?;
        super::install(socket.as_fd(), TlsDirection::Transmit, &secrets.tx)?;
        super::install(socket.as_fd(), TlsDirection::Receive, &secrets.rx)?;
        plaintext.drain(..taken);
        Ok(Switched { keys: Keys::new(schedule, cipher, kernel), socket, drained: plaintext, session })
    }

    /// Runs rustls as far as it goes without I/O: opens records, queues what it wants sent, and
    /// where application data may flow, does `action`.
    fn advance(&mut self, mut action: Action<'_>) -> Result<Stop, rustls::Error> {
        loop {
            let UnbufferedStatus { mut discard, state } = self.conn.process(&mut self.incoming[..self.filled]);
            let stop = match state? {
                ConnectionState::EncodeTlsData(mut e) => {
                    append(&mut self.outgoing, |out| e.encode(out).map_err(EncodeError::required))?;
                    None
                }
                // Queued in `outgoing`, which goes out before the next read.
                ConnectionState::TransmitTlsData(t) => {
                    t.done();
                    None
                }
                ConnectionState::ReadTraffic(mut r) => {
                    while let Some(record) = r.next_record() {
                        let record = record?;
                        discard += record.discard;
                        self.plaintext.extend_from_slice(record.payload);
                    }
                    None
                }
                ConnectionState::PeerClosed | ConnectionState::Closed => {
                    self.peer_closed = true;
                    Some(Stop::PeerClosed)
                }
                ConnectionState::BlockedHandshake => Some(Stop::Input),
                ConnectionState::WriteTraffic(mut w) => {
                    let wrote = match std::mem::replace(&mut action, Action::Nothing) {
                        Action::Nothing => 0,
                        Action::Encrypt(data) => {
                            append(&mut self.outgoing, |out| w.encrypt(data, out).map_err(EncryptError::required))?;
                            data.len()
                        }
                        Action::CloseNotify => {
                            append(&mut self.outgoing, |out| {
                                w.queue_close_notify(out).map_err(EncryptError::required)
                            })?;
                            0
                        }
                    };
                    Some(Stop::Traffic { wrote })
                }
                other => return Err(rustls::Error::General(format!("unexpected TLS state {other:?}"))),
            };
            self.incoming.copy_within(discard..self.filled, 0);
            self.filled -= discard;
            if let Some(stop) = stop {
                return Ok(stop);
            }
        }
    }

    /// A failed handshake: sends the alert rustls queued (best effort), returns the error.
    async fn fail(&mut self, e: rustls::Error) -> io::Error {
        let mut none: [u8; 0] = [];
        if let Ok(ConnectionState::EncodeTlsData(mut alert)) = self.conn.process(&mut none).state {
            let _ = append(&mut self.outgoing, |out| alert.encode(out).map_err(EncodeError::required));
        }
        let _ = tokio::time::timeout(std::time::Duration::from_secs(1), poll_fn(|cx| self.poll_send(cx))).await;
        tls_error(e)
    }

    /// Reads ciphertext: during the handshake what is there; after it, up to the end of the
    /// current record and never past it. `Ok(0)`: end of stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let want = if self.conn.state().is_handshaking() {
            if self.filled == self.incoming.len() {
                if self.incoming.len() >= MAX_INCOMING {
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, "TLS handshake too large")));
                }
                self.incoming.resize(self.incoming.len() * 2, 0);
            }
            self.incoming.len() - self.filled
        } else if self.filled < HEADER {
            HEADER - self.filled
        } else {
            let len = usize::from(u16::from_be_bytes([self.incoming[3], self.incoming[4]]));
            (HEADER + len).saturating_sub(self.filled).max(1)
        };
        if self.incoming.len() < self.filled + want {
            self.incoming.resize(self.filled + want, 0);
        }
        let mut buf = ReadBuf::new(&mut self.incoming[self.filled..self.filled + want]);
        ready!(Pin::new(&mut self.socket).poll_read(cx, &mut buf))?;
        let n = buf.filled().len();
        self.filled += n;
        Poll::Ready(Ok(n))
    }

    /// Writes queued ciphertext until none is left.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let n = ready!(Pin::new(&mut self.socket).poll_write(cx, &self.outgoing[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.outgoing.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl<C: Side> AsyncRead for Staged<C> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let s = &mut *self;
        loop {
            if s.taken < s.plaintext.len() {
                let n = buf.remaining().min(s.plaintext.len() - s.taken);
                buf.put_slice(&s.plaintext[s.taken..s.taken + n]);
                s.taken += n;
                if s.taken == s.plaintext.len() {
                    s.plaintext.clear();
                    s.taken = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if s.peer_closed {
                return Poll::Ready(Ok(()));
            }
            s.advance(Action::Nothing).map_err(tls_error)?;
            if s.taken < s.plaintext.len() || s.peer_closed {
                continue;
            }
            // A KeyUpdate answer or an alert may be waiting to go out.
            ready!(s.poll_send(cx))?;
            if ready!(s.poll_fill(cx))? == 0 {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "peer closed without close_notify",
                )));
            }
        }
    }
}

impl<C: Side> AsyncWrite for Staged<C> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let s = &mut *self;
        ready!(s.poll_send(cx))?;
        match s.advance(Action::Encrypt(data)).map_err(tls_error)? {
            Stop::Traffic { wrote } => Poll::Ready(Ok(wrote)),
            _ => Poll::Ready(Err(io::Error::new(io::ErrorKind::NotConnected, "TLS connection cannot send"))),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let s = &mut *self;
        if !s.close_queued {
            s.close_queued = true;
            s.advance(Action::CloseNotify).map_err(tls_error)?;
        }
        ready!(s.poll_send(cx))?;
        Pin::new(&mut s.socket).poll_shutdown(cx)
    }
}

impl<C> std::fmt::Debug for Staged<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Staged").field("socket", &self.socket).finish_non_exhaustive()
    }
}

/// Grows `out` by what `write` needs (it reports the size it lacks) and keeps what it wrote.
fn append(out: &mut Vec<u8>, mut write: impl FnMut(&mut [u8]) -> Result<usize, Needs>) -> Result<(), rustls::Error> {
    let start = out.len();
    let mut room = 4096;
    loop {
        out.resize(start + room, 0);
        match write(&mut out[start..]) {
            Ok(n) => {
                out.truncate(start + n);
                return Ok(());
            }
            Err(Needs::Room(required)) if required > room => room = required,
            Err(Needs::Room(required)) => {
                out.truncate(start);
                return Err(rustls::Error::General(format!("TLS output needs {required} bytes, had {room}")));
            }
            Err(Needs::Failed(why)) => {
                out.truncate(start);
                return Err(rustls::Error::General(format!("TLS output could not be encoded: {why}")));
            }
        }
    }
}

/// Why an encode or encrypt call wrote nothing.
enum Needs {
    Room(usize),
    Failed(String),
}

trait Required {
    fn required(self) -> Needs;
}

impl Required for EncodeError {
    fn required(self) -> Needs {
        match self {
            Self::InsufficientSize(s) => Needs::Room(s.required_size),
            other => Needs::Failed(other.to_string()),
        }
    }
}

impl Required for EncryptError {
    fn required(self) -> Needs {
        match self {
            Self::InsufficientSize(s) => Needs::Room(s.required_size),
            other => Needs::Failed(other.to_string()),
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// A rustls unbuffered connection, client or server: what [`Staged`] needs of either.
pub trait Side: Send + Unpin + 'static {
    /// The side's data.
    type Data: Send + 'static;

    /// `process_tls_records`.
    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data>;

    /// The session's negotiated state.
    fn state(&self) -> &CommonState;

    /// `dangerous_into_kernel_connection`.
    fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn super::keys::Schedule>), rustls::Error>;
}

impl Side for UnbufferedClientConnection {
    type Data = ClientConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }

    fn state(&self) -> &CommonState {
        self
    }

    fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn super::keys::Schedule>), rustls::Error> {
        let (secrets, conn): (_, KernelConnection<ClientConnectionData>) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Box::new(conn)))
    }
}

impl Side for UnbufferedServerConnection {
    type Data = ServerConnectionData;

    fn process<'c, 'i>(&'c mut self, incoming: &'i mut [u8]) -> UnbufferedStatus<'c, 'i, Self::Data> {
        self.process_tls_records(incoming)
    }

    fn state(&self) -> &CommonState {
        self
    }

    fn into_kernel(self) -> Result<(ExtractedSecrets, Box<dyn super::keys::Schedule>), rustls::Error> {
        let (secrets, conn): (_, KernelConnection<ServerConnectionData>) = self.dangerous_into_kernel_connection()?;
        Ok((secrets, Box::new(conn)))
    }
}
