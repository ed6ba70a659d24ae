//! HTTP/1.1 exchanges between a downstream leg (requests arrive) and an upstream leg
//! (responses arrive), reading only heads and chunk-size lines into userspace; bodies are
//! spliced when both legs are sockets.
//!
//! The caller decides about each request through [`Hooks`] (policy, head rewriting, local
//! answers) and hears about each finished exchange (telemetry). Framing follows the strict
//! rules of `weir-http`; a malformed head gets its status (400/431/505) and the connection
//! closes. After a successful Upgrade/CONNECT the caller switches to the L4 pump.
mod leg;

pub use leg::{drain, finish, move_body, ByteStream, Leg, Moved};

use crate::{Outcome, Side, Tally};
use std::io;
use std::time::{Duration, Instant};
use tokio::time::timeout;
use weir_http::chunked::{Decoder, Step};
use weir_http::{BodyFraming, Parsed, RequestHead, ResponseHead};
use weir_sys::Pipe;

/// Largest response body sent in one write with its head when it is copied anyway.
const INLINE_BODY: u64 = 16 * 1024;

/// How long a closing connection keeps reading what the client still sends.
const LINGER: Duration = Duration::from_secs(2);

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

impl Exchange {
    /// An exchange that began at `started` and ended now, with no body moved.
    pub fn new(status: u16, started: Instant, result: ExchangeResult) -> Self {
        Self {
            status,
            request_body: 0,
            response_body: 0,
            userspace_body: 0,
            duration: started.elapsed(),
            result,
            rejected: None,
        }
    }
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
    let mut conn = Conn::new(sides, limits, tally);
    loop {
        let Some(req) = conn.read_request(down, hooks).await? else { return conn.close(down, up).await };
        let started = Instant::now();
        let head = match hooks.request(&req) {
            Verdict::Answer(status, bytes) => {
                conn.answer(down, hooks, &req, started, status, &bytes).await;
                return conn.close(down, up).await;
            }
            Verdict::Forward(head) => head,
        };
        let (mut ex, step) = conn.exchange(down, up, &req, &head, started).await;
        match &step {
            Err(Failure::Upstream { status, .. }) => conn.fail(down, &mut ex, *status).await,
            Err(Failure::Rejected { status, reason }) => conn.reject(down, &mut ex, *status, reason).await,
            _ => {}
        }
        hooks.done(Some(&req), ex);
        match step {
            Ok(Next::Again) => continue,
            Ok(Next::Close) | Err(Failure::Upstream { .. } | Failure::Rejected { .. }) => {
                return conn.close(down, up).await
            }
            Ok(Next::Upgrade) => return conn.upgrade(down, up).await,
            Err(Failure::Io(side, e)) => return Err(Outcome::from_error(side, e)),
        }
    }
}

/// What follows a relayed exchange.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// The connection may carry another request.
    Again,
    /// The messages forbid reuse: close.
    Close,
    /// Upgrade/CONNECT accepted: opaque bytes from now on.
    Upgrade,
}

/// Why an exchange could not be relayed.
#[derive(Debug)]
pub enum Failure {
    /// The upstream failed before a final response head went downstream: answer with
    /// `status` (0 once a response had started: nothing can be said any more). `retryable`:
    /// nothing reached the client and no request body byte was consumed, so the same head
    /// may go to another upstream if the method is idempotent.
    Upstream {
        /// 502 or 504 (or 0).
        status: u16,
        /// Safe to send again elsewhere.
        retryable: bool,
    },
    /// The request's body framing was malformed (e.g. a bad chunk-size line) before anything
    /// reached the client: answer `status` and close. `reason` is a `weir_http::Error` label.
    Rejected {
        /// 400.
        status: u16,
        /// Why, as a metric label.
        reason: &'static str,
    },
    /// A leg failed mid-exchange.
    Io(Side, io::Error),
}

/// One downstream connection's HTTP/1.1 state: limits, accounting and body pipes. Its steps
/// ([`Conn::read_request`], [`Conn::exchange`], …) let a caller choose the upstream per
/// request; [`serve`] is the simple loop over one fixed upstream.
pub struct Conn<'t> {
    sides: (Side, Side),
    limits: Http1Limits,
    tally: &'t Tally,
    /// Request-direction and response-direction pipes, made on first use.
    pipes: (Option<Pipe>, Option<Pipe>),
}

impl<'t> Conn<'t> {
    /// `sides`: which [`Side`] the downstream and upstream legs are.
    pub fn new(sides: (Side, Side), limits: &Http1Limits, tally: &'t Tally) -> Self {
        Self { sides, limits: *limits, tally, pipes: (None, None) }
    }

    /// The next request head. `None`: the connection is over (closed, idle past the head
    /// timeout, or a malformed/slow head already answered with its status and reported).
    pub async fn read_request(
        &mut self,
        down: &mut Leg<'_>,
        hooks: &mut dyn Hooks,
    ) -> Result<Option<RequestHead>, Outcome> {
        let limits = self.limits;
        let parse = |b: &[u8]| weir_http::parse_request(b, &limits.head);
        let mut began = false;
        let (status, reason, why) = match timeout(limits.request_head, read_head(down, parse, &mut began)).await {
            // A head that trickles in slower than the limit: say so, then close.
            Err(_) if began => (408, "head_timeout", "request head timeout".to_owned()),
            Err(_) | Ok(Ok(None)) => return Ok(None),
            Ok(Err(HeadError::Io(e))) => return Err(Outcome::from_error(self.sides.0, e)),
            Ok(Err(HeadError::Http(e))) => (e.status(), e.as_label(), e.to_string()),
            Ok(Ok(Some((head, raw)))) => {
                if self.sides.0 == Side::Peer {
                    self.count_head(Side::Peer, raw.len());
                }
                return Ok(Some(head));
            }
        };
        tracing::debug!(status, reason = why, "request refused for its form");
        let _ = down.write_all(&weir_http::error_response(status, &why)).await;
        let mut ex = Exchange::new(status, Instant::now(), ExchangeResult::BadRequest);
        ex.rejected = Some(reason);
        hooks.done(None, ex);
        Ok(None)
    }

    /// Sends a local answer for `req` and reports it; the caller closes next.
    pub async fn answer(
        &mut self,
        down: &mut Leg<'_>,
        hooks: &mut dyn Hooks,
        req: &RequestHead,
        started: Instant,
        status: u16,
        bytes: &[u8],
    ) {
        let _ = down.write_all(bytes).await;
        hooks.done(Some(req), Exchange::new(status, started, ExchangeResult::Local));
    }

    /// Relays one exchange: `head` (the request head to send) and the request body up, the
    /// response back. The returned [`Exchange`] is complete but for a failure's answer
    /// ([`Conn::fail`]).
    pub async fn exchange(
        &mut self,
        down: &mut Leg<'_>,
        up: &mut Leg<'_>,
        req: &RequestHead,
        head: &[u8],
        started: Instant,
    ) -> (Exchange, Result<Next, Failure>) {
        let mut ex = Exchange::new(0, started, ExchangeResult::Aborted);
        let mut relayed = false;
        let step = self.relay(down, up, req, head, &mut ex, &mut relayed).await;
        ex.duration = started.elapsed();
        let step = match step {
            // The client's own framing was bad: its error, answered as such.
            Err(Failure::Io(side, e)) if side == self.sides.0 && e.kind() == io::ErrorKind::InvalidData && !relayed => {
                let reason = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<weir_http::Error>())
                    .map_or("bad_chunk", |h| h.as_label());
                tracing::debug!(error = %e, "request body framing refused");
                Err(Failure::Rejected { status: 400, reason })
            }
            // A dead upstream before anything reached the client is the upstream's failure,
            // not the client's: it can be answered, or retried.
            Err(Failure::Io(side, e)) if side == self.sides.1 && !relayed => {
                tracing::debug!(error = %e, "upstream failed before its response");
                Err(Failure::Upstream { status: 502, retryable: req.body == BodyFraming::None })
            }
            Err(Failure::Upstream { status, retryable }) => {
                Err(Failure::Upstream { status, retryable: retryable && !relayed && req.body == BodyFraming::None })
            }
            other => other,
        };
        (ex, step)
    }

    /// Answers a request refused for its body framing, and records why.
    pub async fn reject(&mut self, down: &mut Leg<'_>, ex: &mut Exchange, status: u16, reason: &'static str) {
        ex.result = ExchangeResult::BadRequest;
        ex.status = status;
        ex.rejected = Some(reason);
        let _ = down.write_all(&weir_http::error_response(status, reason)).await;
    }

    /// Answers a failed exchange downstream (when something can still be said).
    pub async fn fail(&mut self, down: &mut Leg<'_>, ex: &mut Exchange, status: u16) {
        ex.result = ExchangeResult::UpstreamError;
        if status != 0 {
            ex.status = status;
            let _ = down.write_all(&weir_http::error_response(status, "upstream failed")).await;
        }
    }

    /// Ends both legs' sending halves after the last exchange, then lets the client finish
    /// sending (lingering close) so our last answer is not lost to a reset.
    pub async fn close(&mut self, down: &mut Leg<'_>, up: &mut Leg<'_>) -> Result<End, Outcome> {
        let _ = finish(up).await;
        let _ = finish(down).await;
        drain(down, LINGER).await;
        Ok(End::Closed)
    }

    /// Hands read-ahead over to the opaque phase after an accepted upgrade.
    pub async fn upgrade(&mut self, down: &mut Leg<'_>, up: &mut Leg<'_>) -> Result<End, Outcome> {
        let (a, b) = (down.take_read_ahead(), up.take_read_ahead());
        up.write_all(&a).await.map_err(|e| Outcome::from_error(self.sides.1, e))?;
        down.write_all(&b).await.map_err(|e| Outcome::from_error(self.sides.0, e))?;
        Ok(End::Upgraded)
    }

    async fn relay(
        &mut self,
        down: &mut Leg<'_>,
        up: &mut Leg<'_>,
        req: &RequestHead,
        head: &[u8],
        ex: &mut Exchange,
        relayed: &mut bool,
    ) -> Result<Next, Failure> {
        let (down_side, up_side) = self.sides;
        up.write_all(head).await.map_err(|e| Failure::Io(up_side, e))?;
        if down_side == Side::Local {
            self.count_head(Side::Local, head.len());
        }
        let mut early: Option<(ResponseHead, Vec<u8>)> = None;
        if req.expect_continue && req.body != BodyFraming::None {
            // The client holds the body back until it sees 100 Continue.
            let (resp, raw) = self.response_head(up, req).await?;
            if resp.status == 100 {
                *relayed = true;
                down.write_all(&raw).await.map_err(|e| Failure::Io(down_side, e))?;
            } else {
                early = Some((resp, raw));
            }
        }
        let early_final = early.is_some();
        if !early_final {
            let moved = self.body(down, up, true, req.body).await.map_err(|(side, e)| Failure::Io(side, e))?;
            ex.request_body = moved.bytes;
            ex.userspace_body += moved.userspace;
        }
        let (resp, raw) = match early.take() {
            Some(r) => r,
            None => loop {
                let (resp, raw) = self.response_head(up, req).await?;
                if (100..200).contains(&resp.status) && resp.status != 101 {
                    *relayed = true;
                    down.write_all(&raw).await.map_err(|e| Failure::Io(down_side, e))?;
                    continue;
                }
                break (resp, raw);
            },
        };
        ex.status = resp.status;
        let upgraded =
            (resp.status == 101 && req.upgrade) || (req.method == "CONNECT" && (200..300).contains(&resp.status));
        let moved = match resp.body {
            BodyFraming::Length(n) if !upgraded && n <= INLINE_BODY && !up.splices_to(down) => {
                // A small body that is copied anyway leaves with its head in one write: one
                // TLS record and one send instead of two, on this node and the next.
                let mut out = raw;
                out.extend_from_slice(&up.read_exact(n as usize).await.map_err(|e| Failure::Io(up_side, e))?);
                *relayed = true;
                down.write_all(&out).await.map_err(|e| Failure::Io(down_side, e))?;
                let moved = Moved { bytes: n, userspace: n };
                self.account(false, moved, 0);
                moved
            }
            _ => {
                *relayed = true;
                down.write_all(&raw).await.map_err(|e| Failure::Io(down_side, e))?;
                if upgraded {
                    ex.result = ExchangeResult::Ok;
                    return Ok(Next::Upgrade);
                }
                self.body(up, down, false, resp.body).await.map_err(|(side, e)| Failure::Io(side, e))?
            }
        };
        ex.response_body = moved.bytes;
        ex.userspace_body += moved.userspace;
        ex.result = ExchangeResult::Ok;
        // A final answer before 100 Continue leaves the body unsent: whatever the client does
        // next cannot be framed safely, so the connection ends.
        if resp.body == BodyFraming::UntilClose || !req.keep_alive || !resp.keep_alive || early_final {
            return Ok(Next::Close);
        }
        Ok(Next::Again)
    }

    async fn response_head(&mut self, up: &mut Leg<'_>, req: &RequestHead) -> Result<(ResponseHead, Vec<u8>), Failure> {
        let limits = self.limits;
        let parse = |b: &[u8]| weir_http::parse_response(b, &limits.head, &req.method);
        match timeout(limits.response_head, read_head(up, parse, &mut false)).await {
            Err(_) => Err(Failure::Upstream { status: 504, retryable: false }),
            Ok(Ok(Some((head, raw)))) => {
                self.count_head(self.sides.1, raw.len());
                Ok((head, raw))
            }
            Ok(Ok(None)) => Err(Failure::Upstream { status: 502, retryable: true }),
            Ok(Err(HeadError::Io(e))) => {
                tracing::debug!(error = %e, "upstream response unreadable");
                Err(Failure::Upstream { status: 502, retryable: true })
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "upstream response malformed");
                Err(Failure::Upstream { status: 502, retryable: false })
            }
        }
    }

    /// Moves one body: `src` -> `dst`; `request` says which way (for the pipe and accounting).
    async fn body(
        &mut self,
        src: &mut Leg<'_>,
        dst: &mut Leg<'_>,
        request: bool,
        framing: BodyFraming,
    ) -> Result<Moved, (Side, io::Error)> {
        let (src_side, dst_side) = if request { self.sides } else { (self.sides.1, self.sides.0) };
        let pipe = if request { &mut self.pipes.0 } else { &mut self.pipes.1 };
        // A short read or bad framing is the source's fault; anything else most likely the sink's.
        let (moved, framing_bytes) = move_framed(src, dst, framing, pipe).await.map_err(|e| {
            let source = matches!(e.kind(), io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidData);
            (if source { src_side } else { dst_side }, e)
        })?;
        self.account(request, moved, framing_bytes);
        Ok(moved)
    }

    /// Counts a moved body (and its framing bytes) in the request or response direction.
    fn account(&self, request: bool, moved: Moved, framing_bytes: u64) {
        let dst_side = if request { self.sides.1 } else { self.sides.0 };
        let counter = if dst_side == Side::Peer { &self.tally.to_peer } else { &self.tally.from_peer };
        counter.inc_by(moved.bytes + framing_bytes);
        self.tally.userspace.inc_by(moved.userspace + framing_bytes);
        self.tally.userspace_body.inc_by(moved.userspace);
    }

    /// Counts head bytes that came from `from` (heads always cross userspace). Each head is
    /// counted once, on the mesh leg's side of the hop.
    fn count_head(&self, from: Side, n: usize) {
        let counter = if from == Side::Peer { &self.tally.from_peer } else { &self.tally.to_peer };
        counter.inc_by(n as u64);
        self.tally.userspace.inc_by(n as u64);
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
