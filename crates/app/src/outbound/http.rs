//! HTTP/1.1 on an outbound listener with `protocol = "http"`: each request is routed by Host
//! and path prefix to a mesh service (weighted splits), sent over a mesh connection to that
//! service's peer node (kept open per service for the next request of the same app
//! connection), with per-route timeouts and retries for idempotent requests that sent no
//! body byte and got no response byte. Heads only through userspace, as on the inbound side.
use crate::core::conn::{Refusal, Shared, Tracked};
use crate::l7::http1::{Current, Recorder};
use crate::outbound::listener::{self, Upstream, Via};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpStream;
use weir_config::{OutboundHttp, OutboundRoute};
use weir_forward::http1::{Conn, Exchange, Failure, Hooks, Http1Limits, Leg, Next, Verdict};
use weir_forward::{Outcome, Side, Tally};
use weir_http::{BodyFraming, RequestHead};
use weir_telemetry::records::Captured;
use weir_telemetry::Direction;

/// A mesh connection kept for the next request to the same service.
struct Pooled<'s> {
    up: Upstream,
    tracked: Tracked<'s>,
}

impl Pooled<'_> {
    fn leg(&mut self, copy: bool) -> Leg<'_> {
        match &mut self.up {
            Upstream::Ktls(s, _) => Leg::socket(&s.socket, Some(&s.keys), copy),
            Upstream::Tls(tls) => Leg::stream(&mut **tls),
            Upstream::Plain(socket) => Leg::socket(socket, None, copy),
        }
    }

    async fn close(mut self, outcome: Outcome) {
        let tcp = match &self.up {
            Upstream::Ktls(s, _) => &s.socket,
            Upstream::Plain(socket) => socket,
            Upstream::Tls(tls) => tls.get_ref().0,
        };
        self.tracked.tally.note_close(tcp);
        if matches!(outcome, Outcome::Closed) {
            let _ = weir_forward::http1::finish(&mut self.leg(false)).await;
        }
        self.tracked.close(outcome);
    }
}

/// Serves one app connection until it ends.
pub(crate) async fn handle(
    app: TcpStream,
    entry: &OutboundRoute,
    http: &OutboundHttp,
    via: &Via,
    shared: &Arc<Shared>,
    captured: Option<Captured>,
) {
    match tokio::time::timeout(http.request_head_timeout, crate::l7::h2::preface_on_socket(&app)).await {
        Ok(Ok(true)) => {
            let id = shared.next_id();
            let served =
                crate::l7::h2::serve_outbound(shared.clone(), Arc::new(http.clone()), via.clone(), id, app).await;
            if let Err(e) = served {
                tracing::debug!(conn = id, error = e, "HTTP/2 app connection ended");
            }
            return;
        }
        Ok(Ok(false)) => {}
        Ok(Err(_)) | Err(_) => return,
    }
    let id = shared.next_id();
    let limits = Http1Limits {
        head: weir_http::Limits { max_head_bytes: http.max_head_bytes, max_headers: http.max_headers },
        request_head: http.request_head_timeout,
        response_head: http.request_head_timeout,
    };
    let front_tally = Tally::default();
    let mut front = Conn::new((Side::Local, Side::Peer), &limits, &front_tally);
    let mut pool: HashMap<String, Pooled<'_>> = HashMap::new();
    let source = via.id();
    let mut log = Log {
        rec: Recorder {
            shared,
            conn: id,
            direction: Direction::Outbound,
            service: entry.service.clone(),
            route: String::new(),
            source: source.clone(),
            destination: entry.peer_id.clone(),
            mode: if http.copy { "copy" } else { "userspace" },
            record: None,
        },
        current: None,
    };
    let mut down = Leg::socket(&app, None, http.copy);
    let mut aborted = false;
    let upgraded = loop {
        let req = match front.read_request(&mut down, &mut log).await {
            Ok(Some(req)) => req,
            Ok(None) => break None,
            Err(_) => break None,
        };
        let started = Instant::now();
        let raw = req;
        let req = crate::l7::http1::origin_form(&raw).into_owned();
        let path = match weir_policy::normalize_path(&req.target) {
            Ok(p) => p,
            Err(why) => {
                log.current = None;
                front.answer(&mut down, &mut log, &req, started, 400, &weir_http::error_response(400, why)).await;
                break None;
            }
        };
        let host = crate::l7::routing::host_of(&req);
        let Some(route) = crate::l7::routing::choose(&http.routes, host.as_deref(), &path) else { break None };
        let current = Current::of(&req, path, "routed", shared.span_ratio);
        let head = current.forward_head(&req);
        log.current = Some(current);
        let idempotent = matches!(req.method.as_str(), "GET" | "HEAD" | "OPTIONS" | "PUT" | "DELETE" | "TRACE");
        let may_retry = idempotent && req.body == BodyFraming::None;
        let mut attempt = 0;
        let step = loop {
            let draw = u32::from_le_bytes(crate::l7::http1::random()[..4].try_into().unwrap_or([0; 4]));
            let Some(service) = crate::l7::routing::pick(&route.split, draw) else { break Err(503) };
            let Some(target) = shared.directory.get(service) else { break Err(503) };
            log.rec.service = service.to_owned();
            log.rec.route = route.path_prefix.clone();
            log.rec.destination = target.peer_id.clone();
            let mut pooled = match pool.remove(service) {
                Some(p) => p,
                None => {
                    match connect(target, via, shared, route.connect_timeout, (http.copy, captured.clone())).await {
                        Some(p) => p,
                        None if may_retry && attempt < route.retries => {
                            attempt += 1;
                            continue;
                        }
                        None => break Err(503),
                    }
                }
            };
            if !http.copy {
                log.rec.mode = pooled.tracked.mode.as_label();
            }
            log.rec.record = Some(pooled.tracked.record.clone());
            let conn_limits = Http1Limits { response_head: route.response_timeout, ..limits };
            // Counters are shared handles: the clone counts into the mesh connection's own.
            let tally = pooled.tracked.tally.clone();
            let mut conn = Conn::new((Side::Local, Side::Peer), &conn_limits, &tally);
            let (mut ex, step) = {
                let mut up = pooled.leg(http.copy);
                conn.exchange(&mut down, &mut up, &req, &head, started).await
            };
            match step {
                Ok(Next::Again) => {
                    log.done(Some(&req), ex);
                    pool.insert(service.to_owned(), pooled);
                    break Ok(true);
                }
                Ok(Next::Close) => {
                    log.done(Some(&req), ex);
                    pooled.close(Outcome::Closed).await;
                    break Ok(false);
                }
                Ok(Next::Upgrade) => {
                    // The app connection and this mesh connection become one opaque L4 hop.
                    log.done(Some(&req), ex);
                    pool.insert(UPGRADED.to_owned(), pooled);
                    break Ok(false);
                }
                Err(Failure::Upstream { status, retryable }) => {
                    pooled.close(Outcome::Failed(Side::Peer, std::io::Error::other("upstream failed"))).await;
                    if retryable && may_retry && attempt < route.retries {
                        attempt += 1;
                        tracing::debug!(conn = id, service, attempt, "retrying on a fresh mesh connection");
                        continue;
                    }
                    front.fail(&mut down, &mut ex, status).await;
                    log.done(Some(&req), ex);
                    break Ok(false);
                }
                Err(Failure::Rejected { status, reason }) => {
                    front.reject(&mut down, &mut ex, status, reason).await;
                    log.done(Some(&req), ex);
                    pooled.close(Outcome::Failed(Side::Local, std::io::Error::other(reason))).await;
                    break Ok(false);
                }
                Err(Failure::Io(side, e)) => {
                    log.done(Some(&req), ex);
                    aborted = true;
                    pooled.close(Outcome::Failed(side, e)).await;
                    break Ok(false);
                }
            }
        };
        match step {
            Ok(true) => continue,
            Ok(false) => break pool.remove(UPGRADED),
            Err(status) => {
                let mut ex = Exchange::new(0, started, weir_forward::http1::ExchangeResult::UpstreamError);
                front.fail(&mut down, &mut ex, status).await;
                log.done(Some(&req), ex);
                break None;
            }
        }
    };
    for (_, p) in pool.drain() {
        p.close(Outcome::Closed).await;
    }
    drop(down);
    match upgraded {
        Some(Pooled { up, tracked }) => {
            // Nothing was drained before the first request: `connect` refused such a connection.
            let outcome = up.pump(app, &tracked.tally, shared.limits).await;
            tracked.close(outcome);
        }
        // A failure mid-exchange must reach the app as a reset, not a clean end.
        None if aborted => drop(weir_sys::abort_on_close(std::os::fd::AsFd::as_fd(&app))),
        None => drop(weir_sys::shutdown_write(std::os::fd::AsFd::as_fd(&app))),
    }
}

/// Pool key of the mesh connection an upgrade continues on.
const UPGRADED: &str = "\0upgraded";

async fn connect<'s>(
    target: &OutboundRoute,
    via: &Via,
    shared: &'s Shared,
    timeout: std::time::Duration,
    (copy, captured): (bool, Option<Captured>),
) -> Option<Pooled<'s>> {
    let id = shared.next_id();
    let up = listener::connect(target, via, shared, id, timeout).await.ok()?;
    if let Upstream::Ktls(s, _) = &up {
        if !s.drained.is_empty() {
            // The inbound side speaks only after a request: bytes this early cannot be framed.
            shared.refuse(id, Direction::Outbound, Refusal::PreambleMalformed, &"data before the first request");
            return None;
        }
    }
    let who = (target.peer_id.clone(), target.service.clone());
    let tracked = Tracked::open(shared, id, Direction::Outbound, up.mode(), who, up.leg(copy).captured(captured));
    Some(Pooled { up, tracked })
}

/// The request log of an app connection: routing decides per request, so `rec` follows the
/// current request's service and route.
struct Log<'a> {
    rec: Recorder<'a>,
    current: Option<Current>,
}

impl Log<'_> {
    fn done(&mut self, head: Option<&RequestHead>, ex: Exchange) {
        let current = self.current.take().filter(|_| head.is_some());
        self.rec.record(head, &ex, current.as_ref());
    }
}

impl Hooks for Log<'_> {
    fn request(&mut self, head: &RequestHead) -> Verdict {
        // Routing, not a hook, decides on this listener; nothing calls this.
        Verdict::Forward(weir_http::encode_request(head, &head.target, &[]))
    }

    fn done(&mut self, head: Option<&RequestHead>, exchange: Exchange) {
        Log::done(self, head, exchange);
    }
}
