//! HTTP/1.1 exchanges between a downstream leg (requests arrive) and an upstream leg
//! (responses arrive), reading only heads and chunk-size lines into userspace; bodies are
//! spliced when both legs are sockets.
//!
//! The caller decides about each request through [`Hooks`] (policy, head rewriting, local
//! answers) and hears about each finished exchange (telemetry). Framing follows the strict
//! rules of `weir-http`; a malformed head gets its status (400/431/505) and the connection
//! closes. After a successful Upgrade/CONNECT the caller switches to the L4 pump.
mod leg;

pub use leg::{finish, move_body, ByteStream, Leg, Moved};

use crate::{Outcome, Side, Tally};
use std::io;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use weir_http::chunked::{Decoder, Step};
use weir_http::{BodyFraming, Parsed, RequestHead, ResponseHead};
use weir_sys::Pipe;

/// Limits of the HTTP/1.1 path (from config).
#[derive(Debug, Clone, Copy)]
pub struct Http1Limits {
    /// Head size limits.
    pub head: weir_http::Limits,
    /// Longest wait for a complete request head, the idle time between requests included.
    pub request_head: Duration,
    /// Longest wait for the upstream's response head once the request is sent.
    pub response_head: Duration,
}

/// What to do with a request head.
#[derive(Debug)]
pub enum Verdict {
    /// Send this head upstream (the original or a rewrite), then the body.
    Forward(Vec<u8>),
    /// Answer downstream with this complete response (status given) and close.
    Answer(u16, Vec<u8>),
}

/// How an exchange ended, for telemetry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExchangeResult {
    /// A response was relayed in full.
    Ok,
    /// Answered here (policy, rate limit).
    Local,
    /// The request head was malformed; answered with its status.
    BadRequest,
    /// The upstream failed or sent a malformed response; answered 502/504 if possible.
    UpstreamError,
    /// A leg failed mid-exchange.
    Aborted,
}

impl ExchangeResult {
    /// A stable metric label.
    pub fn as_label(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Local => "local",
            Self::BadRequest => "bad_request",
            Self::UpstreamError => "upstream_error",
            Self::Aborted => "aborted",
        }
    }
}

/// One finished exchange.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// Status sent downstream (0 if none was).
    pub status: u16,
    /// Request body bytes moved upstream.
    pub request_body: u64,
    /// Response body bytes moved downstream.
    pub response_body: u64,
    /// Body bytes (both ways) that crossed userspace.
    pub userspace_body: u64,
    /// From the complete request head to the end of the response.
    pub duration: Duration,
    /// How it ended.
    pub result: ExchangeResult,
    /// Why a request was refused before any policy saw it (a `weir_http::Error` label, or
    /// `head_timeout`).
    pub rejected: Option<&'static str>,
}

/// The caller's part: decide on each request, hear about each exchange.
pub trait Hooks: Send {
    /// A complete, well-formed request head arrived.
    fn request(&mut self, head: &RequestHead) -> Verdict;
    /// An exchange ended; `head` is `None` for a malformed request.
    fn done(&mut self, head: Option<&RequestHead>, exchange: Exchange);
}

/// How the HTTP/1.1 phase ended without a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum End {
    /// The connection is finished; both legs have been shut down for writing.
    Closed,
    /// An Upgrade or CONNECT succeeded: the legs now carry opaque bytes (switch to L4).
    Upgraded,
}

/// Runs exchanges until one side closes, a message forbids reuse, or an upgrade. `sides` says
/// which of [`Side`] the downstream and upstream legs are, for error attribution.
pub async fn serve(
    down: &mut Leg<'_>,
    up: &mut Leg<'_>,
    sides: (Side, Side),
    hooks: &mut dyn Hooks,
    limits: &Http1Limits,
    tally: &Tally,
) -> Result<End, Outcome> {
    let mut run = Run { down, up, sides, tally, pipes: (None, None) };
    loop {
        let parse = |b: &[u8]| weir_http::parse_request(b, &limits.head);
        let mut began = false;
        let req = match timeout(limits.request_head, read_head(run.down, parse, &mut began)).await {
            Err(_) if began => {
                // A head that trickles in slower than the limit: say so, then close.
                let _ = run.down.write_all(&weir_http::error_response(408, "request head timeout")).await;
                let mut ex = exchange(408, Instant::now(), ExchangeResult::BadRequest);
                ex.rejected = Some("head_timeout");
                hooks.done(None, ex);
                return run.close().await;
            }
            Err(_) | Ok(Ok(None)) => return run.close().await,
            Ok(Err(HeadError::Io(e))) => return Err(Outcome::from_error(sides.0, e)),
            Ok(Err(HeadError::Http(e))) => {
                let status = e.status();
                tracing::debug!(error = %e, status, "malformed request head");
                let _ = run.down.write_all(&weir_http::error_response(status, &e.to_string())).await;
                let mut ex = exchange(status, Instant::now(), ExchangeResult::BadRequest);
                ex.rejected = Some(e.as_label());
                hooks.done(None, ex);
                return run.close().await;
            }
            Ok(Ok(Some((head, raw)))) => {
                if sides.0 == Side::Peer {
                    run.count_head(Side::Peer, raw.len());
                }
                head
            }
        };
        let started = Instant::now();
        match hooks.request(&req) {
            Verdict::Answer(status, bytes) => {
                let _ = run.down.write_all(&bytes).await;
                hooks.done(Some(&req), exchange(status, started, ExchangeResult::Local));
                return run.close().await;
            }
            Verdict::Forward(head) => {
                run.up.write_all(&head).await.map_err(|e| Outcome::from_error(sides.1, e))?;
                if sides.0 == Side::Local {
                    run.count_head(Side::Local, head.len());
                }
            }
        }
        let mut ex = exchange(0, started, ExchangeResult::Aborted);
        let step = run.exchange(&req, limits, &mut ex).await;
        ex.duration = started.elapsed();
        if let Err(Failure::Upstream(status)) = &step {
            ex.result = ExchangeResult::UpstreamError;
            if *status != 0 {
                ex.status = *status;
                let _ = run.down.write_all(&weir_http::error_response(*status, "upstream failed")).await;
            }
        }
        hooks.done(Some(&req), ex);
        match step {
            Ok(Next::Again) => continue,
            Ok(Next::Close) => return run.close().await,
            Ok(Next::Upgrade) => {
                // Read-ahead of a stream leg belongs to the opaque phase now.
                let (a, b) = (run.down.take_read_ahead(), run.up.take_read_ahead());
                run.up.write_all(&a).await.map_err(|e| Outcome::from_error(sides.1, e))?;
                run.down.write_all(&b).await.map_err(|e| Outcome::from_error(sides.0, e))?;
                return Ok(End::Upgraded);
            }
            Err(Failure::Upstream(_)) => return run.close().await,
            Err(Failure::Io(side, e)) => return Err(Outcome::from_error(side, e)),
        }
    }
}

fn exchange(status: u16, started: Instant, result: ExchangeResult) -> Exchange {
    Exchange { status, request_body: 0, response_body: 0, userspace_body: 0, duration: started.elapsed(), result, rejected: None }
}

enum Next {
    Again,
    Close,
    Upgrade,
}

enum Failure {
    /// The upstream failed before a response head went downstream: answer with this status
    /// (0: a response had started, nothing can be said any more).
    Upstream(u16),
    Io(Side, io::Error),
}

struct Run<'r, 'a, 'b> {
    down: &'r mut Leg<'a>,
    up: &'r mut Leg<'b>,
    sides: (Side, Side),
    tally: &'r Tally,
    /// Request-direction and response-direction pipes, made on first use.
    pipes: (Option<Pipe>, Option<Pipe>),
}

impl Run<'_, '_, '_> {
    async fn exchange(&mut self, req: &RequestHead, limits: &Http1Limits, ex: &mut Exchange) -> Result<Next, Failure> {
        let mut early: Option<(ResponseHead, Vec<u8>)> = None;
        if req.expect_continue && req.body != BodyFraming::None {
            // The client holds the body back until it sees 100 Continue.
            let (resp, raw) = self.response_head(req, limits).await?;
            if resp.status == 100 {
                self.relay_head(&raw).await?;
            } else {
                early = Some((resp, raw));
            }
        }
        if early.is_none() {
            let moved = self.body(true, req.body).await.map_err(|(side, e)| Failure::Io(side, e))?;
            ex.request_body = moved.bytes;
            ex.userspace_body += moved.userspace;
        }
        let early_final = early.is_some();
        let (resp, raw) = match early.take() {
            Some(r) => r,
            None => loop {
                let (resp, raw) = self.response_head(req, limits).await?;
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    self.relay_head(&raw).await?;
                    continue;
                }
                break (resp, raw);
            },
        };
        self.relay_head(&raw).await?;
        ex.status = resp.status;
        let upgraded =
            (resp.status == 101 && req.upgrade) || (req.method == "CONNECT" && (200..300).contains(&resp.status));
        if upgraded {
            ex.result = ExchangeResult::Ok;
            return Ok(Next::Upgrade);
        }
        let moved = self.body(false, resp.body).await.map_err(|(side, e)| {
            // The head is already downstream: nothing more can be said, only cut.
            Failure::Io(side, e)
        })?;
        ex.response_body = moved.bytes;
        ex.userspace_body += moved.userspace;
        ex.result = ExchangeResult::Ok;
        // A final answer before 100 Continue leaves the body unsent: whatever the client does
        // next cannot be framed safely, so the connection ends.
        let body_skipped = early_final;
        if resp.body == BodyFraming::UntilClose || !req.keep_alive || !resp.keep_alive || body_skipped {
            return Ok(Next::Close);
        }
        Ok(Next::Again)
    }

    async fn response_head(
        &mut self,
        req: &RequestHead,
        limits: &Http1Limits,
    ) -> Result<(ResponseHead, Vec<u8>), Failure> {
        let parse = |b: &[u8]| weir_http::parse_response(b, &limits.head, &req.method);
        match timeout(limits.response_head, read_head(self.up, parse, &mut false)).await {
            Err(_) => Err(Failure::Upstream(504)),
            Ok(Ok(Some((head, raw)))) => {
                self.count_head(self.sides.1, raw.len());
                Ok((head, raw))
            }
            Ok(Ok(None)) => Err(Failure::Upstream(502)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream response unusable");
                Err(Failure::Upstream(502))
            }
        }
    }

    async fn relay_head(&mut self, raw: &[u8]) -> Result<(), Failure> {
        self.down.write_all(raw).await.map_err(|e| Failure::Io(self.sides.0, e))?;
        Ok(())
    }

    /// Moves one body: downstream -> upstream (`request`) or back.
    async fn body(&mut self, request: bool, framing: BodyFraming) -> Result<Moved, (Side, io::Error)> {
        let (src_side, dst_side) = if request { self.sides } else { (self.sides.1, self.sides.0) };
        let result = if request {
            move_framed(self.down, self.up, framing, &mut self.pipes.0).await
        } else {
            move_framed(self.up, self.down, framing, &mut self.pipes.1).await
        };
        // A short read is the source's fault; anything else most likely the sink's.
        let (moved, framing_bytes) =
            result.map_err(|e| (if e.kind() == io::ErrorKind::UnexpectedEof { src_side } else { dst_side }, e))?;
        let counter = if dst_side == Side::Peer { &self.tally.to_peer } else { &self.tally.from_peer };
        counter.inc_by(moved.bytes + framing_bytes);
        self.tally.userspace.inc_by(moved.userspace + framing_bytes);
        self.tally.userspace_body.inc_by(moved.userspace);
        Ok(moved)
    }

    /// Counts head bytes that came from `from` (heads always cross userspace). Each head is
    /// counted once, on the mesh leg's side of the hop.
    fn count_head(&self, from: Side, n: usize) {
        let counter = if from == Side::Peer { &self.tally.from_peer } else { &self.tally.to_peer };
        counter.inc_by(n as u64);
        self.tally.userspace.inc_by(n as u64);
    }

    /// Ends both legs' sending halves after the last exchange.
    async fn close(&mut self) -> Result<End, Outcome> {
        let _ = finish(self.up).await;
        let _ = finish(self.down).await;
        Ok(End::Closed)
    }
}

/// Moves one body as `framing` says. Returns the body bytes and the framing bytes moved.
async fn move_framed(
    src: &mut Leg<'_>,
    dst: &mut Leg<'_>,
    framing: BodyFraming,
    pipe: &mut Option<Pipe>,
) -> io::Result<(Moved, u64)> {
    match framing {
        BodyFraming::None => Ok((Moved::default(), 0)),
        BodyFraming::Length(n) => Ok((move_body(src, dst, Some(n), pipe).await?, 0)),
        BodyFraming::UntilClose => Ok((move_body(src, dst, None, pipe).await?, 0)),
        BodyFraming::Chunked => move_chunked(src, dst, pipe).await,
    }
}

/// Moves a chunked body: size lines and trailers through userspace (forwarded as they are),
/// chunk data with [`move_body`]. Returns the data moved and the framing bytes.
async fn move_chunked(src: &mut Leg<'_>, dst: &mut Leg<'_>, pipe: &mut Option<Pipe>) -> io::Result<(Moved, u64)> {
    let mut decoder = Decoder::new();
    // Framing consumed from `src` that the decoder has not finished (a partial line).
    let mut pending: Vec<u8> = Vec::new();
    let mut total = Moved::default();
    let mut framing = 0u64;
    loop {
        let peeked = src.peek().await?;
        if peeked.is_empty() {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "chunked body cut short"));
        }
        let fresh = peeked.len();
        let old = pending.len();
        pending.extend_from_slice(peeked);
        let (used, step) = decoder.advance(&pending).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        dst.write_all(&pending[..used]).await?;
        framing += used as u64;
        match step {
            Step::NeedMore => {
                // Everything peeked is framing (the decoder wants more of a line): take it.
                src.consume(fresh).await?;
                pending.drain(..used);
            }
            Step::Data(_) | Step::Done if used >= old => {
                src.consume(used - old).await?;
                pending.clear();
                if let Step::Data(n) = step {
                    let moved = move_body(src, dst, Some(n), pipe).await?;
                    decoder.data_moved(n);
                    total.bytes += moved.bytes;
                    total.userspace += moved.userspace;
                } else {
                    return Ok((total, framing));
                }
            }
            Step::Data(_) | Step::Done => {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "chunk framing out of step"));
            }
        }
    }
}

/// Why a head could not be read.
#[derive(Debug, thiserror::Error)]
enum HeadError {
    #[error(transparent)]
    Io(io::Error),
    #[error(transparent)]
    Http(weir_http::Error),
}

/// Reads one head, consuming exactly its bytes. `None`: the leg ended cleanly before a head
/// began. `began` turns true with the first byte (what a timeout needs to know).
async fn read_head<T>(
    leg: &mut Leg<'_>,
    parse: impl Fn(&[u8]) -> Result<Parsed<T>, weir_http::Error>,
    began: &mut bool,
) -> Result<Option<(T, Vec<u8>)>, HeadError> {
    let mut head: Vec<u8> = Vec::new();
    loop {
        let peeked = leg.peek().await.map_err(HeadError::Io)?;
        *began |= !peeked.is_empty();
        if peeked.is_empty() {
            if head.is_empty() {
                return Ok(None);
            }
            return Err(HeadError::Io(io::Error::new(io::ErrorKind::UnexpectedEof, "head cut short")));
        }
        let (old, fresh) = (head.len(), peeked.len());
        head.extend_from_slice(peeked);
        match parse(&head).map_err(HeadError::Http)? {
            Parsed::Complete { head: parsed, len } => {
                leg.consume(len - old).await.map_err(HeadError::Io)?;
                head.truncate(len);
                return Ok(Some((parsed, head)));
            }
            Parsed::Partial => leg.consume(fresh).await.map_err(HeadError::Io)?,
        }
    }
}
