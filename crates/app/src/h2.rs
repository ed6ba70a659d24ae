//! HTTP/2 (h2c, recognised by its connection preface) on `protocol = "http"` inbound services,
//! in explicit copy mode: hyper terminates HTTP/2 from the peer node and opens HTTP/2 to the
//! backend, with the same per-request policy, trace propagation and telemetry as HTTP/1.1.
//! Multiplexed streams share one connection, so their bodies cannot be spliced: every body byte
//! crosses userspace, and the metrics say `mode = "copy"`.
use crate::conn::Shared;
use crate::http::{Current, HttpService, Recorder};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use weir_forward::http1::{Exchange, ExchangeResult};
use weir_identity::SpiffeId;
use weir_policy::{HttpVerdict, RequestFacts};
use weir_telemetry::http::VerdictLabels;
use weir_telemetry::Direction;

/// The HTTP/2 client connection preface.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What each stream's request is judged and recorded under.
struct Ctx {
    shared: Arc<Shared>,
    svc: Arc<HttpService>,
    conn: u64,
    service: String,
    peer: SpiffeId,
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;

/// Serves HTTP/2 from the peer node (`mesh`: a kTLS socket or a userspace TLS stream) to the
/// backend until either side ends the connection.
pub(crate) async fn serve<S>(
    shared: Arc<Shared>,
    svc: Arc<HttpService>,
    conn: u64,
    (peer, service): (SpiffeId, String),
    backend: TcpStream,
    mesh: S,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, backend_conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, BoxBody>(TokioIo::new(backend))
        .await
        .map_err(|e| format!("backend HTTP/2 handshake: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = backend_conn.await {
            tracing::debug!(error = %e, "backend HTTP/2 connection ended");
        }
    });
    let ctx = Arc::new(Ctx { shared, svc, conn, service, peer });
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (ctx, sender) = (ctx.clone(), sender.clone());
        async move { Ok::<_, std::convert::Infallible>(stream(&ctx, sender, req).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(mesh), handler)
        .await
        .map_err(|e| format!("HTTP/2 from the peer: {e}"))
}

/// One stream: policy on its head, then relayed with counted bodies; recorded when its
/// response body ends.
async fn stream(
    ctx: &Arc<Ctx>,
    mut sender: hyper::client::conn::http2::SendRequest<BoxBody>,
    req: Request<Incoming>,
) -> Response<BoxBody> {
    let started = Instant::now();
    let head = head_of(&req);
    let facts = RequestFacts { source: &ctx.peer, method: &head.method, target: &head.target, headers: &head.headers };
    let verdict = {
        let mut limiter = ctx.svc.limiter.lock().unwrap_or_else(|p| p.into_inner());
        weir_policy::decide(&ctx.svc.config.policy, &mut limiter, &facts, Instant::now())
    };
    let label = verdict.as_label();
    let verdicts = &ctx.shared.metrics.http.verdicts;
    verdicts.get_or_create(&VerdictLabels { service: ctx.service.clone(), verdict: label }).inc();
    let path = weir_policy::normalize_path(&head.target).unwrap_or_default();
    let current = Current::of(&head, path, label);
    let local = |status: StatusCode, extra: Option<(&'static str, String)>, text: &str| {
        let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))).map_err(|e| match e {}).boxed_unsync());
        *r.status_mut() = status;
        if let Some((name, value)) = extra {
            if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, v);
            }
        }
        r
    };
    let answer = match verdict {
        HttpVerdict::Allow => None,
        HttpVerdict::Deny { .. } => Some((403, local(StatusCode::FORBIDDEN, None, "denied by policy"))),
        HttpVerdict::BadTarget(why) => Some((400, local(StatusCode::BAD_REQUEST, None, why))),
        HttpVerdict::RateLimited { retry_after_secs } => Some((
            429,
            local(StatusCode::TOO_MANY_REQUESTS, Some(("retry-after", retry_after_secs.to_string())), "rate limited"),
        )),
    };
    if let Some((status, response)) = answer {
        let mut ex = exchange(started, status, ExchangeResult::Local);
        ex.duration = started.elapsed();
        ctx.recorder().record(Some(&head), &ex, Some(&current));
        return response;
    }
    let (mut parts, body) = req.into_parts();
    let target = match head.target.split_once('?') {
        Some((_, q)) => format!("{}?{q}", current.path),
        None => current.path.clone(),
    };
    let authority = parts.uri.authority().map_or_else(|| "backend".to_owned(), |a| a.to_string());
    parts.uri = match format!("http://{authority}{target}").parse() {
        Ok(u) => u,
        Err(_) => return local(StatusCode::BAD_REQUEST, None, "unusable request target"),
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(&current.trace.header()) {
        parts.headers.insert("traceparent", v);
    }
    let sent = Arc::new(prometheus_client::metrics::counter::Counter::<u64>::default());
    let upstream = Request::from_parts(parts, Counted::new(body, sent.clone(), None).boxed_unsync());
    match sender.send_request(upstream).await {
        Ok(resp) => {
            let (parts, body) = resp.into_parts();
            let status = parts.status.as_u16();
            let (ctx, head) = (ctx.clone(), head.clone());
            let on_end = Box::new(move |received: u64| {
                let mut ex = exchange(started, status, ExchangeResult::Ok);
                ex.request_body = sent.get();
                ex.response_body = received;
                ex.userspace_body = ex.request_body + received;
                ctx.recorder().record(Some(&head), &ex, Some(&current));
            });
            let counted = Counted::new(body, Arc::default(), Some(on_end));
            Response::from_parts(parts, counted.boxed_unsync())
        }
        Err(e) => {
            tracing::debug!(error = %e, "backend stream failed");
            let mut ex = exchange(started, 502, ExchangeResult::UpstreamError);
            ex.request_body = sent.get();
            ctx.recorder().record(Some(&head), &ex, Some(&current));
            local(StatusCode::BAD_GATEWAY, None, "upstream failed")
        }
    }
}

impl Ctx {
    fn recorder(&self) -> Recorder<'_> {
        Recorder {
            shared: &self.shared,
            conn: self.conn,
            direction: Direction::Inbound,
            service: self.service.clone(),
            route: String::new(),
            source: self.peer.clone(),
            destination: self.shared.store.id().clone(),
            mode: "copy",
        }
    }
}

fn exchange(started: Instant, status: u16, result: ExchangeResult) -> Exchange {
    Exchange {
        status,
        request_body: 0,
        response_body: 0,
        userspace_body: 0,
        duration: started.elapsed(),
        result,
        rejected: None,
    }
}

/// The request as the HTTP/1.1 policy sees heads: method, path-and-query, fields.
fn head_of(req: &Request<Incoming>) -> weir_http::RequestHead {
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .chain(req.uri().authority().map(|a| ("host".to_owned(), a.as_str().as_bytes().to_vec())))
        .collect();
    weir_http::RequestHead {
        method: req.method().as_str().to_owned(),
        target: req.uri().path_and_query().map_or_else(|| "/".to_owned(), |p| p.as_str().to_owned()),
        minor_version: 1,
        headers,
        body: weir_http::BodyFraming::None,
        keep_alive: true,
        expect_continue: false,
        upgrade: false,
    }
}

type OnEnd = Box<dyn FnOnce(u64) + Send>;

/// A body that counts its data bytes and reports the total once, when it ends or is dropped.
struct Counted<B> {
    inner: B,
    count: Arc<prometheus_client::metrics::counter::Counter<u64>>,
    on_end: Option<OnEnd>,
}

impl<B> Counted<B> {
    fn new(inner: B, count: Arc<prometheus_client::metrics::counter::Counter<u64>>, on_end: Option<OnEnd>) -> Self {
        Self { inner, count, on_end }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        if let Some(f) = self.on_end.take() {
            f(self.count.get());
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.count.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether the first bytes on a socket leg (plain or kTLS) are the HTTP/2 preface; peeks, so
/// nothing is consumed. A kTLS control record first means "not HTTP/2".
pub(crate) async fn preface_on_socket(socket: &TcpStream) -> std::io::Result<bool> {
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = match socket.peek(&mut buf).await {
            Ok(n) => n,
            Err(e) if matches!(e.raw_os_error(), Some(5 | 22)) => return Ok(false),
            Err(e) => return Err(e),
        };
        if n == 0 || buf[..n] != PREFACE[..n] {
            return Ok(false);
        }
        if n == PREFACE.len() {
            return Ok(true);
        }
        // A preface split across segments: rare; wait for the rest without spinning.
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

/// Reads from a userspace stream until the preface is complete or ruled out; returns whether
/// it is HTTP/2 and the bytes read (to be replayed to whichever protocol handles it).
pub(crate) async fn preface_on_stream<S: AsyncRead + Unpin>(stream: &mut S) -> std::io::Result<(bool, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::with_capacity(PREFACE.len());
    let mut buf = [0u8; PREFACE.len()];
    while got.len() < PREFACE.len() {
        let n = stream.read(&mut buf[..PREFACE.len() - got.len()]).await?;
        got.extend_from_slice(&buf[..n]);
        if n == 0 || got[..] != PREFACE[..got.len()] {
            return Ok((false, got));
        }
    }
    Ok((true, got))
}

/// A stream with bytes already read off it put back in front.
pub(crate) struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self { prefix, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = buf.remaining().min(self.prefix.len() - self.at);
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
