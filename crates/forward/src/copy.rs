//! Plaintext socket <-> userspace TLS stream: the fallback where the kernel has no kTLS. Every
//! byte crosses userspace (rustls does the crypto), and the tally says so.
use crate::{abort_both, Outcome, Side, Tally};
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// First read buffer: small, so an idle connection costs little.
const BUF_MIN: usize = 4 * 1024;
/// Largest read buffer, reached by doubling while reads keep filling it.
const BUF_MAX: usize = 64 * 1024;

/// A stream that runs over one TCP socket (to arm a reset on it).
pub trait TcpBacked {
    /// The socket underneath.
    fn tcp(&self) -> &TcpStream;
}

impl TcpBacked for tokio_rustls::client::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

impl TcpBacked for tokio_rustls::server::TlsStream<TcpStream> {
    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }
}

/// Forwards between `local` and a userspace TLS stream until both directions end. End of
/// `local` becomes close_notify + FIN; the peer's close_notify becomes a FIN on `local`.
pub async fn copy_tls<S>(mut local: TcpStream, peer: S, tally: &Tally) -> Outcome
where
    S: AsyncRead + AsyncWrite + TcpBacked + Unpin,
{
    let (mut peer_rd, mut peer_wr) = tokio::io::split(peer);
    let (mut local_rd, mut local_wr) = local.split();
    let to_peer = pump(&mut local_rd, &mut peer_wr, &tally.to_peer, &tally.userspace, (Side::Local, Side::Peer));
    let from_peer = pump(&mut peer_rd, &mut local_wr, &tally.from_peer, &tally.userspace, (Side::Peer, Side::Local));
    let result = tokio::try_join!(to_peer, from_peer);
    let peer = peer_rd.unsplit(peer_wr);
    tally.note_close(peer.tcp());
    match result {
        Ok(_) => Outcome::Closed,
        Err(outcome) => {
            abort_both(&local, peer.tcp());
            outcome
        }
    }
}

async fn pump<R, W>(
    rd: &mut R,
    wr: &mut W,
    moved: &crate::FlowCounter,
    userspace: &Counter,
    (from, to): (Side, Side),
) -> Result<(), Outcome>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; BUF_MIN];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(n) => n,
            // rustls reports a FIN without close_notify as UnexpectedEof: a truncation.
            Err(e) => return Err(Outcome::from_error(from, e)),
        };
        if n == 0 {
            return wr.shutdown().await.map_err(|e| Outcome::from_error(to, e));
        }
        wr.write_all(&buf[..n]).await.map_err(|e| Outcome::from_error(to, e))?;
        // Flush per read: rustls buffers plaintext until flushed, and interactive traffic
        // must not wait for the next read.
        wr.flush().await.map_err(|e| Outcome::from_error(to, e))?;
        moved.inc_by(n as u64);
        userspace.inc_by(n as u64);
        if n == buf.len() && buf.len() < BUF_MAX {
            buf.resize(buf.len() * 2, 0);
        }
    }
}
