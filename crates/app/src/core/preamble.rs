//! The one client side of a preamble exchange, whichever leg it opens (a mesh connection to a
//! peer node, the host plane to its DPU, the DPU to its host plane): send the preamble, read
//! the fixed-size status. Callers turn the failure into their own refusal and wording.
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use weir_tls::preamble::{Status, RESPONSE_LEN};

/// How an exchange failed.
pub(crate) enum Failed {
    /// The preamble could not be sent.
    Send(std::io::Error),
    /// No status came back.
    NoAnswer(std::io::Error),
    /// The other side answered, and not `Ok`.
    Answered(Status),
    /// The answer is not a status.
    Malformed(weir_tls::preamble::Error),
}

/// Sends `preamble` on `leg` and reads the answer; `Ok` only for [`Status::Ok`]. Reads exactly
/// the status: what follows it stays on the leg.
pub(crate) async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(leg: &mut S, preamble: &[u8]) -> Result<(), Failed> {
    leg.write_all(preamble).await.map_err(Failed::Send)?;
    leg.flush().await.map_err(Failed::Send)?;
    let mut answer = [0u8; RESPONSE_LEN];
    leg.read_exact(&mut answer).await.map_err(Failed::NoAnswer)?;
    match Status::decode(&answer) {
        Ok(Status::Ok) => Ok(()),
        Ok(status) => Err(Failed::Answered(status)),
        Err(e) => Err(Failed::Malformed(e)),
    }
}
