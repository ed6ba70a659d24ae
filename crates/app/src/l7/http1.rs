//! HTTP/1.1 on inbound services with `protocol = "http"`: the L7 policy on each request head
//! (source SPIFFE ID × method × path × headers, rate limits), trace propagation, per-request
//! metrics and the access log. The bytes move in `weir_forward::http1` (heads only through
//! userspace; bodies spliced unless a leg is userspace TLS or the service is in copy mode).
use crate::core::conn::{Shared, Tracked};
use opentelemetry::KeyValue;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::net::TcpStream;
use weir_config::HttpConfig;
use weir_forward::http1::{self, End, Exchange, Hooks, Http1Limits, Leg, Verdict};
use weir_forward::{Outcome, Side};
use weir_http::RequestHead;
use weir_identity::SpiffeId;
use weir_policy::{HttpVerdict, RateLimiter, RequestFacts};
use weir_telemetry::http::{
    method_label, status_class, BodyLabels, DurationLabels, RejectedLabels, RequestLabels, VerdictLabels,
};
use weir_telemetry::records::ConnRecord;
use weir_telemetry::trace::TraceContext;
use weir_telemetry::Direction;

/// A service's HTTP handling at run time: its config and its rate-limit buckets.
pub(crate) struct HttpService {
    pub config: HttpConfig,
    pub limiter: Mutex<RateLimiter>,
}

impl HttpService {
    pub fn new(config: HttpConfig) -> Self {
        Self { config, limiter: Mutex::new(RateLimiter::new()) }
    }

    /// The one L7 decision, for HTTP/1.1 and HTTP/2 alike: the rate limiter and the policy on
    /// `head` (in origin form) from `source`, counted under `service`'s verdicts, and the
    /// request as recorded from here on (normalized path, trace context, verdict).
    pub fn decide(
        &self,
        service: &str,
        source: &SpiffeId,
        head: &RequestHead,
        shared: &Shared,
    ) -> (HttpVerdict, Current) {
        let facts = RequestFacts { source, method: &head.method, target: &head.target, headers: &head.headers };
        let verdict = {
            let mut limiter = self.limiter.lock().unwrap_or_else(|p| p.into_inner());
            weir_policy::decide(&self.config.policy, &mut limiter, &facts, Instant::now())
        };
        let label = verdict.as_label();
        let verdicts = &shared.metrics.http.verdicts;
        verdicts.get_or_create(&VerdictLabels { service: service.to_owned(), verdict: label }).inc();
        let path = weir_policy::normalize_path(&head.target).unwrap_or_default();
        (verdict, Current::of(head, path, label, shared.span_ratio))
    }

    fn limits(&self) -> Http1Limits {
        let c = &self.config;
        Http1Limits {
            head: weir_http::Limits { max_head_bytes: c.max_head_bytes, max_headers: c.max_headers },
            request_head: c.request_head_timeout,
            response_head: c.response_timeout,
        }
    }
}

/// Serves HTTP from a peer node to the backend until the connection ends: HTTP/1.1 head-only
/// (an upgraded connection continues as L4 splice), or HTTP/2 in copy mode when the peer opens
/// with its preface. The peer leg is a socket: kTLS (with its key schedule), or a host plane's
/// plaintext host channel from its DPU (`None`).
pub(crate) async fn inbound_socket(
    shared: &Arc<Shared>,
    svc: &Arc<HttpService>,
    t: &Tracked<'_>,
    backend: TcpStream,
    (peer, keys): (TcpStream, Option<weir_tls::ktls::Keys>),
) -> Outcome {
    match tokio::time::timeout(svc.config.request_head_timeout, crate::l7::h2::preface_on_socket(&peer)).await {
        Ok(Ok(true)) => {
            let who = (t.peer.clone(), t.service.clone());
            return h2_outcome(crate::l7::h2::serve(shared.clone(), svc.clone(), t.id, who, backend, peer).await);
        }
        Ok(Ok(false)) => {}
        Ok(Err(e)) => return Outcome::Failed(Side::Peer, e),
        Err(_) => {
            // Idle from the start: end it as cleanly as an idle connection between requests.
            let _ = http1::finish(&mut Leg::socket(&peer, keys.as_ref(), false)).await;
            let _ = http1::finish(&mut Leg::socket(&backend, None, false)).await;
            return Outcome::Closed;
        }
    }
    let copy = svc.config.copy;
    let result = {
        let mut down = Leg::socket(&peer, keys.as_ref(), copy);
        let mut up = Leg::socket(&backend, None, copy);
        let mut hooks = InboundHooks::new(shared, svc, t, copy);
        http1::serve(&mut down, &mut up, (Side::Peer, Side::Local), &mut hooks, &svc.limits(), &t.tally).await
    };
    if !matches!(result, Ok(End::Upgraded)) {
        t.tally.note_close(&peer);
    }
    match (result, keys) {
        (Ok(End::Closed), _) => Outcome::Closed,
        (Ok(End::Upgraded), Some(keys)) => {
            weir_forward::splice_ktls(backend, peer, &keys, Vec::new(), &t.tally, shared.limits).await
        }
        (Ok(End::Upgraded), None) => weir_forward::splice_plain(backend, peer, &t.tally, shared.limits.pipe_size).await,
        (Err(outcome), _) => {
            weir_forward::abort_both(&backend, &peer);
            outcome
        }
    }
}

/// As [`inbound_socket`], with the peer leg in userspace TLS (every body byte is decrypted here
/// anyway, and counted so).
pub(crate) async fn inbound_tls<S>(
    shared: &Arc<Shared>,
    svc: &Arc<HttpService>,
    t: &Tracked<'_>,
    backend: TcpStream,
    mut tls: S,
) -> Outcome
where
    S: weir_forward::http1::ByteStream + weir_forward::TcpBacked + 'static,
{
    let prefix =
        match tokio::time::timeout(svc.config.request_head_timeout, crate::l7::h2::preface_on_stream(&mut tls)).await {
            Ok(Ok((true, prefix))) => {
                let who = (t.peer.clone(), t.service.clone());
                let mesh = crate::l7::h2::Prefixed::new(prefix, tls);
                return h2_outcome(crate::l7::h2::serve(shared.clone(), svc.clone(), t.id, who, backend, mesh).await);
            }
            Ok(Ok((false, prefix))) => prefix,
            Ok(Err(e)) => return Outcome::Failed(Side::Peer, e),
            Err(_) => {
                // Idle from the start: end it as cleanly as an idle connection between requests.
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                let _ = http1::finish(&mut Leg::socket(&backend, None, false)).await;
                return Outcome::Closed;
            }
        };
    let copy = svc.config.copy;
    let result = {
        let mut down = Leg::stream_with(&mut tls, prefix);
        // Bodies cross userspace for the TLS anyway: the backend leg reads ahead too.
        let mut up = Leg::socket(&backend, None, true);
        let mut hooks = InboundHooks::new(shared, svc, t, copy);
        http1::serve(&mut down, &mut up, (Side::Peer, Side::Local), &mut hooks, &svc.limits(), &t.tally).await
    };
    if !matches!(result, Ok(End::Upgraded)) {
        t.tally.note_close(tls.tcp());
    }
    match result {
        Ok(End::Closed) => Outcome::Closed,
        Ok(End::Upgraded) => weir_forward::copy_tls(backend, tls, &t.tally).await,
        Err(outcome) => {
            weir_forward::abort_both(&backend, tls.tcp());
            outcome
        }
    }
}

fn h2_outcome(result: Result<(), String>) -> Outcome {
    match result {
        Ok(()) => Outcome::Closed,
        Err(e) => Outcome::Failed(Side::Peer, std::io::Error::other(e)),
    }
}

/// What the current request looked like, kept from its head to its end.
pub(crate) struct Current {
    pub method: &'static str,
    pub path: String,
    pub trace: TraceContext,
    pub verdict: &'static str,
}

impl Current {
    /// Reads method, normalized path and trace context off a request head.
    pub fn of(head: &RequestHead, path: String, verdict: &'static str, span_ratio: f64) -> Self {
        let incoming = head.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("traceparent")).map(|(_, v)| &v[..]);
        Self {
            method: method_label(&head.method),
            path,
            trace: TraceContext::continue_or_start_sampling(incoming, random(), span_ratio),
            verdict,
        }
    }

    /// The head to send on: the normalized path (with the query) and the new `traceparent`.
    /// `head` is already in origin form ([`origin_form`]).
    pub fn forward_head(&self, head: &RequestHead) -> Vec<u8> {
        // The upstream gets the path the policy and routing judged, so it cannot read another.
        let target = match head.target.split_once('?') {
            Some((_, query)) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        };
        let traceparent = self.trace.header();
        weir_http::encode_request(head, &target, &[("traceparent", traceparent.as_bytes())])
    }
}

/// The request as its upstream will read it, which is what policy and routing must judge: an
/// absolute-form target becomes origin-form with its authority as the only Host (RFC 9112
/// §3.2.2: the authority wins over a Host field), and a fragment (never valid in a request)
/// is dropped.
pub(crate) fn origin_form(head: &RequestHead) -> std::borrow::Cow<'_, RequestHead> {
    let authority = absolute_authority(&head.target);
    let fragment = head.target.contains('#');
    if authority.is_none() && !fragment {
        return std::borrow::Cow::Borrowed(head);
    }
    let mut out = head.clone();
    let target = head.target.split('#').next().unwrap_or("");
    out.target = match &authority {
        Some(a) => {
            let rest = target.split_once("://").map_or("", |(_, r)| r);
            let path = &rest[a.len()..];
            if path.starts_with('/') {
                path.to_owned()
            } else {
                format!("/{path}")
            }
        }
        None => target.to_owned(),
    };
    if let Some(a) = authority {
        out.headers.retain(|(n, _)| !n.eq_ignore_ascii_case("host"));
        out.headers.push(("Host".to_owned(), a.into_bytes()));
    }
    std::borrow::Cow::Owned(out)
}

/// A request's log line and span use TCP facts at most this old (else read afresh).
const FRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// Where a connection's requests are counted and logged.
pub(crate) struct Recorder<'a> {
    pub shared: &'a Shared,
    pub conn: u64,
    pub direction: Direction,
    pub service: String,
    pub route: String,
    pub source: SpiffeId,
    pub destination: SpiffeId,
    pub mode: &'static str,
    /// The mesh connection the current request runs on (its L4 facts join the request).
    pub record: Option<Arc<ConnRecord>>,
}

impl Recorder<'_> {
    /// Metrics and one access-log line for a finished exchange.
    pub fn record(&self, head: Option<&RequestHead>, ex: &Exchange, current: Option<&Current>) {
        let m = &self.shared.metrics.http;
        let class = status_class(ex.status);
        let labels = RequestLabels {
            direction: self.direction,
            service: self.service.clone(),
            method: current.map_or("other", |c| c.method),
            status_class: class,
            mode: self.mode,
            result: ex.result.as_label(),
        };
        m.requests.get_or_create(&labels).inc();
        if let Some(reason) = ex.rejected {
            m.rejected.get_or_create(&RejectedLabels { service: self.service.clone(), reason }).inc();
        }
        m.duration
            .get_or_create(&DurationLabels { service: self.service.clone(), status_class: class })
            .observe(ex.duration.as_secs_f64());
        m.userspace_body
            .get_or_create(&BodyLabels { service: self.service.clone(), mode: self.mode })
            .inc_by(ex.userspace_body);
        let (path, trace_id, span_id, verdict) = match current {
            Some(c) => (c.path.as_str(), c.trace.trace_id.as_str(), c.trace.span_id.as_str(), c.verdict),
            None => ("", "", "", ex.rejected.unwrap_or("bad_request")),
        };
        // The request joins its mesh connection: id and TCP facts at most FRESH old, read now
        // for a request whose span is exported (the span shows the connection as it ended).
        let exported = self.shared.spans.is_some() && current.is_some_and(|c| c.trace.sampled());
        // Nobody reads the facts when the access line is filtered out and no span goes out:
        // then they cost no getsockopt.
        let logged = tracing::enabled!(target: "weir::access", tracing::Level::INFO);
        let (mesh_conn, tcp) = match &self.record {
            Some(r) => {
                r.requests.inc();
                let max_age = if exported { std::time::Duration::ZERO } else { FRESH };
                let facts = (exported || logged).then(|| crate::core::sampler::facts_within(self.shared, r, max_age));
                (r.start().id, facts.flatten())
            }
            None => (0, None),
        };
        let tcp = tcp.unwrap_or_default();
        if let (Some(spans), Some(c)) = (&self.shared.spans, current.filter(|c| c.trace.sampled())) {
            let end = std::time::SystemTime::now();
            let mut attributes = vec![
                KeyValue::new("http.request.method", head.map_or("", |h| h.method.as_str()).to_owned()),
                KeyValue::new("url.path", c.path.clone()),
                KeyValue::new("http.response.status_code", i64::from(ex.status)),
                KeyValue::new("weir.service", self.service.clone()),
                KeyValue::new("weir.source", self.source.to_string()),
                KeyValue::new("weir.destination", self.destination.to_string()),
                KeyValue::new("weir.verdict", verdict),
                KeyValue::new("weir.conn_id", mesh_conn as i64),
                KeyValue::new("weir.mode", self.mode),
                KeyValue::new("weir.tcp.srtt_us", i64::from(tcp.srtt_us)),
                KeyValue::new("weir.tcp.rttvar_us", i64::from(tcp.rttvar_us)),
                KeyValue::new("weir.tcp.retransmits", i64::from(tcp.retransmits)),
                KeyValue::new("weir.tcp.cwnd", i64::from(tcp.cwnd)),
            ];
            if !self.route.is_empty() {
                attributes.push(KeyValue::new("http.route", self.route.clone()));
            }
            spans.offer(crate::core::otlp::RequestSpan {
                trace: &c.trace,
                inbound: self.direction == Direction::Inbound,
                start: end.checked_sub(ex.duration).unwrap_or(end),
                end,
                status: ex.status,
                attributes,
            });
        }
        tracing::info!(
            target: "weir::access",
            conn = self.conn,
            mesh_conn,
            direction = ?self.direction,
            service = self.service,
            route = self.route,
            source = %self.source,
            destination = %self.destination,
            method = head.map_or("", |h| h.method.as_str()),
            path,
            status = ex.status,
            verdict,
            result = ex.result.as_label(),
            request_body_bytes = ex.request_body,
            response_body_bytes = ex.response_body,
            userspace_body_bytes = ex.userspace_body,
            duration_us = ex.duration.as_micros() as u64,
            mode = self.mode,
            srtt_us = tcp.srtt_us,
            retransmits = tcp.retransmits,
            trace_id,
            span_id,
            "request"
        );
    }
}

struct InboundHooks<'a> {
    rec: Recorder<'a>,
    svc: &'a HttpService,
    current: Option<Current>,
}

impl<'a> InboundHooks<'a> {
    fn new(shared: &'a Shared, svc: &'a HttpService, t: &'a Tracked<'_>, copy: bool) -> Self {
        let mode = if copy { "copy" } else { t.mode.as_label() };
        let rec = Recorder {
            shared,
            conn: t.id,
            direction: Direction::Inbound,
            service: t.service.clone(),
            route: String::new(),
            source: t.peer.clone(),
            destination: shared.store.id().clone(),
            mode,
            record: Some(t.record.clone()),
        };
        Self { rec, svc, current: None }
    }
}

impl Hooks for InboundHooks<'_> {
    fn request(&mut self, head: &RequestHead) -> Verdict {
        let head = &*origin_form(head);
        let (verdict, current) = self.svc.decide(&self.rec.service, &self.rec.source, head, self.rec.shared);
        let current = self.current.insert(current);
        match verdict {
            HttpVerdict::Allow => Verdict::Forward(current.forward_head(head)),
            HttpVerdict::Deny { .. } => Verdict::Answer(403, weir_http::local_response(403, &[], "denied by policy")),
            HttpVerdict::BadTarget(why) => Verdict::Answer(400, weir_http::error_response(400, why)),
            HttpVerdict::RateLimited { retry_after_secs } => {
                let secs = retry_after_secs.to_string();
                Verdict::Answer(429, weir_http::local_response(429, &[("retry-after", &secs)], "rate limited"))
            }
        }
    }

    fn done(&mut self, head: Option<&RequestHead>, ex: Exchange) {
        let current = self.current.take().filter(|_| head.is_some());
        self.rec.record(head, &ex, current.as_ref());
    }
}

/// The authority of an absolute-form target (`http://host:port/path`), if it is one.
pub(crate) fn absolute_authority(target: &str) -> Option<String> {
    let rest = target.strip_prefix("http://").or_else(|| target.strip_prefix("https://"))?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(rest[..end].to_owned())
}

/// Random bytes for trace and span ids and split draws: a per-thread generator seeded by the
/// OS (ids need uniqueness, not secrecy, and a syscall per request would cost more than the
/// rest of the head work).
pub(crate) fn random() -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..16].copy_from_slice(&fastrand::u128(..).to_le_bytes());
    b[16..].copy_from_slice(&fastrand::u64(..).to_le_bytes());
    b
}
