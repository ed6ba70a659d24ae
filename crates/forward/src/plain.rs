//! Plaintext socket <-> plaintext socket with splice(2), both directions: a host plane's app
//! leg and its leg to the DPU, which does the wire's TLS. No TLS records and no session limit:
//! end of stream on one side is a half-close on the other.
use crate::splice::{empty, fill};
use crate::{abort_both, Outcome, Side, Tally};
use std::os::fd::AsFd;
use tokio::net::TcpStream;
use weir_sys::Pipe;

/// Forwards between `local` and `peer` until both directions end.
pub async fn splice_plain(local: TcpStream, peer: TcpStream, tally: &Tally, pipe_size: usize) -> Outcome {
    let result = tokio::try_join!(
        one_way(&local, &peer, (Side::Local, Side::Peer), &tally.to_peer, pipe_size),
        one_way(&peer, &local, (Side::Peer, Side::Local), &tally.from_peer, pipe_size)
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

async fn one_way(
    src: &TcpStream,
    dst: &TcpStream,
    (from, to): (Side, Side),
    counted: &crate::FlowCounter,
    pipe_size: usize,
) -> Result<(), Outcome> {
    // An idle connection holds no pipe: create it when the first bytes are ready.
    src.readable().await.map_err(|e| Outcome::from_error(from, e))?;
    let pipe = Pipe::with_capacity(pipe_size).map_err(|e| Outcome::Failed(Side::Local, e.into()))?;
    loop {
        let n = fill(src, &pipe, pipe.capacity()).await.map_err(|e| Outcome::from_error(from, e))?;
        if n == 0 {
            weir_sys::shutdown_write(dst.as_fd()).map_err(|e| Outcome::from_error(to, e.into()))?;
            return Ok(());
        }
        empty(&pipe, dst, n).await.map_err(|e| Outcome::from_error(to, e))?;
        counted.inc_by(n as u64);
    }
}
