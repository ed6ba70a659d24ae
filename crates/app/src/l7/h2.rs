//! HTTP/2 (h2c, recognised by its connection preface) on `protocol = "http"` inbound services,
//! in explicit copy mode: hyper terminates HTTP/2 from the peer node and opens HTTP/2 to the
//! backend, with the same per-request policy, trace propagation and telemetry as HTTP/1.1.
//! Multiplexed streams share one connection, so their bodies cannot be spliced: every body byte
//! crosses userspace, and the metrics say `mode = "copy"`.
use crate::core::conn::Shared;
use crate::l7::http1::{Current, HttpService, Recorder};
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
use weir_policy::HttpVerdict;
use weir_telemetry::Direction;

/// The HTTP/2 client connection preface.
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Who a stream is recorded under (owned: streams run on their own tasks).
#[derive(Clone)]
struct Who {
    shared: Arc<Shared>,
    conn: u64,
    direction: Direction,
    service: String,
    route: String,
    source: SpiffeId,
    destination: SpiffeId,
}

impl Who {
    fn recorder(&self) -> Recorder<'_> {
        Recorder {
            shared: &self.shared,
            conn: self.conn,
            direction: self.direction,
            service: self.service.clone(),
            route: self.route.clone(),
            source: self.source.clone(),
            destination: self.destination.clone(),
            mode: "copy",
            // Inbound streams share the mesh connection's id; an outbound app connection is not
            // a mesh connection and has no record.
            record: self.shared.records.get(self.conn),
        }
    }

    fn answer(
        &self,
        head: &weir_http::RequestHead,
        current: &Current,
        started: Instant,
        response: Local,
    ) -> Response<BoxBody> {
        let ex = Exchange::new(response.0.as_u16(), started, ExchangeResult::Local);
        self.recorder().record(Some(head), &ex, Some(current));
        local(response)
    }
}

type BoxBody = http_body_util::combinators::UnsyncBoxBody<Bytes, hyper::Error>;
type Sender = hyper::client::conn::http2::SendRequest<BoxBody>;

/// A response Weir gives itself: status, an extra field, a short text.
struct Local(StatusCode, Option<(&'static str, String)>, &'static str);

fn local(Local(status, extra, text): Local) -> Response<BoxBody> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{text}\n"))).map_err(|e| match e {}).boxed_unsync());
    *r.status_mut() = status;
    if let Some((name, value)) = extra {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            r.headers_mut().insert(name, v);
        }
    }
    r
}

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
    let sender = handshake(backend).await.map_err(|e| format!("backend HTTP/2 handshake: {e}"))?;
    let destination = shared.store.id().clone();
    let who =
        Who { shared, conn, direction: Direction::Inbound, service, route: String::new(), source: peer, destination };
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (who, svc, sender) = (who.clone(), svc.clone(), sender.clone());
        async move { Ok::<_, std::convert::Infallible>(inbound_stream(who, &svc, sender, req).await) }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(mesh), handler)
        .await
        .map_err(|e| format!("HTTP/2 from the peer: {e}"))
}

/// An HTTP/2 client connection over `io`, driven on its own task.
async fn handshake<T>(io: T) -> Result<Sender, hyper::Error>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, BoxBody>(TokioIo::new(io))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "HTTP/2 client connection ended");
        }
    });
    Ok(sender)
}

/// One inbound stream: policy on its head, then relayed.
async fn inbound_stream(who: Who, svc: &HttpService, sender: Sender, req: Request<Incoming>) -> Response<BoxBody> {
    let started = Instant::now();
    let head = head_of(&req);
    let (verdict, current) = svc.decide(&who.service, &who.source, &head, &who.shared);
    let refusal = match verdict {
        HttpVerdict::Allow => return relay(who, head, current, req, sender, started, None).await,
        HttpVerdict::Deny { .. } => Local(StatusCode::FORBIDDEN, None, "denied by policy"),
        HttpVerdict::BadTarget(why) => Local(StatusCode::BAD_REQUEST, None, why),
        HttpVerdict::RateLimited { retry_after_secs } => {
            Local(StatusCode::TOO_MANY_REQUESTS, Some(("retry-after", retry_after_secs.to_string())), "rate limited")
        }
    };
    who.answer(&head, &current, started, refusal)
}

/// Sends one stream on `sender` (normalized path, this hop's traceparent) and relays the
/// response with counted bodies; recorded when the response body ends. `deadline`: the
/// longest wait for the response head.
async fn relay(
    who: Who,
    head: weir_http::RequestHead,
    current: Current,
    req: Request<Incoming>,
    mut sender: Sender,
    started: Instant,
    deadline: Option<std::time::Duration>,
) -> Response<BoxBody> {
    let (mut parts, body) = req.into_parts();
    let target = match head.target.split_once('?') {
        Some((_, q)) => format!("{}?{q}", current.path),
        None => current.path.clone(),
    };
    let authority = parts.uri.authority().map_or_else(|| who.service.clone(), |a| a.to_string());
    parts.uri = match format!("http://{authority}{target}").parse() {
        Ok(u) => u,
        Err(_) => return who.answer(&head, &current, started, Local(StatusCode::BAD_REQUEST, None, "unusable target")),
    };
    if let Ok(v) = hyper::header::HeaderValue::from_str(&current.trace.header()) {
        parts.headers.insert("traceparent", v);
    }
    // :authority says the host; a differing `host` field must not reach the upstream.
    parts.headers.remove(hyper::header::HOST);
    let sent = Arc::new(prometheus_client::metrics::counter::Counter::<u64>::default());
    let upstream = Request::from_parts(parts, Counted::new(body, sent.clone(), None).boxed_unsync());
    let response = match deadline {
        Some(d) => tokio::time::timeout(d, sender.send_request(upstream)).await.map_err(|_| 504),
        None => Ok(sender.send_request(upstream).await),
    };
    match response {
        Ok(Ok(resp)) => {
            let (parts, body) = resp.into_parts();
            let status = parts.status.as_u16();
            let on_end = Box::new(move |received: u64| {
                let mut ex = Exchange::new(status, started, ExchangeResult::Ok);
                ex.request_body = sent.get();
                ex.response_body = received;
                ex.userspace_body = ex.request_body + received;
                who.recorder().record(Some(&head), &ex, Some(&current));
            });
            Response::from_parts(parts, Counted::new(body, Arc::default(), Some(on_end)).boxed_unsync())
        }
        failed => {
            let status = if failed.is_err() { StatusCode::GATEWAY_TIMEOUT } else { StatusCode::BAD_GATEWAY };
            if let Ok(Err(e)) = &failed {
                tracing::debug!(error = %e, "upstream stream failed");
            }
            let mut ex = Exchange::new(status.as_u16(), started, ExchangeResult::UpstreamError);
            ex.request_body = sent.get();
            who.recorder().record(Some(&head), &ex, Some(&current));
            local(Local(status, None, "upstream failed"))
        }
    }
}

/// Serves HTTP/2 from a local app on an outbound `protocol = "http"` listener: each stream is
/// routed like an HTTP/1.1 request and sent over one multiplexed mesh connection per service.
pub(crate) async fn serve_outbound(
    shared: Arc<Shared>,
    http: Arc<weir_config::OutboundHttp>,
    via: crate::outbound::listener::Via,
    conn: u64,
    app: TcpStream,
) -> Result<(), String> {
    let senders: Arc<tokio::sync::Mutex<std::collections::HashMap<String, Sender>>> = Arc::default();
    let source = via.id();
    let handler = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shared, http, via, senders, source) =
            (shared.clone(), http.clone(), via.clone(), senders.clone(), source.clone());
        async move {
            let started = Instant::now();
            let head = head_of(&req);
            let mut who = Who {
                shared: shared.clone(),
                conn,
                direction: Direction::Outbound,
                service: String::new(),
                route: String::new(),
                source,
                destination: shared.store.id().clone(),
            };
            let path = match weir_policy::normalize_path(&head.target) {
                Ok(p) => p,
                Err(why) => {
                    let current = Current::of(&head, String::new(), "bad_target", shared.span_ratio);
                    return Ok(who.answer(&head, &current, started, Local(StatusCode::BAD_REQUEST, None, why)));
                }
            };
            let current = Current::of(&head, path, "routed", shared.span_ratio);
            let host = crate::l7::routing::host_of(&head);
            let route = crate::l7::routing::choose(&http.routes, host.as_deref(), &current.path);
            let draw = u32::from_le_bytes(crate::l7::http1::random()[..4].try_into().unwrap_or([0; 4]));
            let target = route
                .and_then(|r| Some((r, crate::l7::routing::pick(&r.split, draw)?)))
                .and_then(|(r, s)| Some((r, shared.directory.get(s)?.clone())));
            let Some((route, target)) = target else {
                return Ok(who.answer(
                    &head,
                    &current,
                    started,
                    Local(StatusCode::SERVICE_UNAVAILABLE, None, "no route"),
                ));
            };
            who.service = target.service.clone();
            who.route = route.path_prefix.clone();
            who.destination = target.peer_id.clone();
            let sender = {
                let mut senders = senders.lock().await;
                match senders.get(&target.service).filter(|s| !s.is_closed()) {
                    Some(s) => Some(s.clone()),
                    None => match mesh_sender(&shared, &target, &via, route.connect_timeout).await {
                        Some(s) => {
                            senders.insert(target.service.clone(), s.clone());
                            Some(s)
                        }
                        None => None,
                    },
                }
            };
            let Some(sender) = sender else {
                return Ok(who.answer(
                    &head,
                    &current,
                    started,
                    Local(StatusCode::SERVICE_UNAVAILABLE, None, "peer unreachable"),
                ));
            };
            Ok::<_, std::convert::Infallible>(
                relay(who, head, current, req, sender, started, Some(route.response_timeout)).await,
            )
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(app), handler)
        .await
        .map_err(|e| format!("HTTP/2 from the app: {e}"))
}

/// A multiplexed mesh connection to `target`'s peer node, tracked as a mesh connection for as
/// long as it lives.
async fn mesh_sender(
    shared: &Arc<Shared>,
    target: &weir_config::OutboundRoute,
    via: &crate::outbound::listener::Via,
    timeout: std::time::Duration,
) -> Option<Sender> {
    let id = shared.next_id();
    let up = crate::outbound::listener::connect(target, via, shared, id, timeout).await.ok()?;
    let (mode, leg) = (up.mode(), up.leg(true));
    let io: Box<dyn weir_forward::http1::ByteStream> = match up {
        // The inbound side speaks only after the client's preface: early bytes cannot be framed.
        crate::outbound::listener::Upstream::Ktls(s, _) if !s.drained.is_empty() => return None,
        // Copy mode over kTLS: hyper reads the socket itself, so a KeyUpdate from the peer ends
        // the connection (a read error), and this side never reaches its record limit's rekey.
        crate::outbound::listener::Upstream::Ktls(s, _) => Box::new(s.socket),
        crate::outbound::listener::Upstream::Tls(tls) => tls,
        crate::outbound::listener::Upstream::Plain(socket) => Box::new(socket),
    };
    let (sender, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, BoxBody>(TokioIo::new(io))
        .await
        .map_err(|e| tracing::warn!(error = %e, service = target.service, "HTTP/2 over the mesh: handshake failed"))
        .ok()?;
    let (shared, peer, service) = (shared.clone(), target.peer_id.clone(), target.service.clone());
    tokio::spawn(async move {
        let t = crate::core::conn::Tracked::open(&shared, id, Direction::Outbound, mode, (peer, service), leg);
        let outcome = match connection.await {
            Ok(()) => weir_forward::Outcome::Closed,
            Err(e) => weir_forward::Outcome::Failed(weir_forward::Side::Peer, std::io::Error::other(e.to_string())),
        };
        t.close(outcome);
    });
    Some(sender)
}

/// The request as the HTTP/1.1 policy sees heads: method, path-and-query, fields.
fn head_of(req: &Request<Incoming>) -> weir_http::RequestHead {
    // :authority is the host the upstream sees; a `host` field beside it must not be judged.
    let authority = req.uri().authority().map(|a| ("host".to_owned(), a.as_str().as_bytes().to_vec()));
    let has_authority = authority.is_some();
    let headers = req
        .headers()
        .iter()
        .filter(|(n, _)| !(has_authority && n.as_str() == "host"))
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .chain(authority)
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
