//! The `http` sections: of an inbound service (head-only splice or full copy, head limits and
//! timeouts, L7 rules compiled to `weir_policy::HttpPolicy`) and of an outbound listener
//! (routes by Host and path prefix to mesh services, weighted splits, per-route timeouts and
//! retries).
use crate::raw::{RawHttp, RawHttpRule, RawOutbound, RawOutboundHttp, RawRoute, RawService};
use crate::typed::{ranged, service_name, spiffe_id, Check};
use std::time::Duration;
use weir_policy::{Action, HeaderMatch, HttpPolicy, HttpRule, PathMatch, RateLimit};

/// HTTP/1.1 handling of one service.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Move bodies through userspace even where splice could (explicit copy mode).
    pub copy: bool,
    /// Largest request or response head.
    pub max_head_bytes: usize,
    /// Most header fields in a head.
    pub max_headers: usize,
    /// Longest wait for a complete request head, idle time between requests included.
    pub request_head_timeout: Duration,
    /// Longest wait for the backend's response head.
    pub response_timeout: Duration,
    /// Rules on request heads and local rate limits.
    pub policy: HttpPolicy,
}

/// Reads `protocol` and `http` of a service at `prefix` (e.g. `inbound.services[0].`).
/// `Some(None)`: a valid L4 service.
pub(crate) fn service(c: &mut Check<'_>, prefix: &str, s: &RawService) -> Option<Option<HttpConfig>> {
    let protocol = c.optional(&s.protocol, &format!("{prefix}protocol"), "tcp".to_owned(), |p| match p.as_str() {
        "tcp" | "http" => Ok(p.clone()),
        other => Err(format!("{other:?} is not a protocol (tcp, http)")),
    })?;
    match (protocol.as_str(), &s.http) {
        ("tcp", Some(_)) => {
            c.error(&format!("{prefix}http"), None, "an http section needs protocol = \"http\"");
            None
        }
        ("tcp", None) => Some(None),
        (_, raw) => http(c, &format!("{prefix}http."), raw.as_ref()).map(Some),
    }
}

fn http(c: &mut Check<'_>, prefix: &str, raw: Option<&RawHttp>) -> Option<HttpConfig> {
    let empty = RawHttp {
        mode: None,
        max_head_bytes: None,
        max_headers: None,
        request_head_timeout_ms: None,
        response_timeout_ms: None,
        default: None,
        rules: Vec::new(),
        rate_limits: Vec::new(),
    };
    let h = raw.unwrap_or(&empty);
    let p = |f: &str| format!("{prefix}{f}");
    let (copy, max_head, max_headers, req_timeout) =
        head_settings(c, prefix, (&h.mode, &h.max_head_bytes, &h.max_headers, &h.request_head_timeout_ms));
    let resp_timeout = c.optional(&h.response_timeout_ms, &p("response_timeout_ms"), 30_000, ranged(10, 3_600_000));
    let default = c.optional(&h.default, &p("default"), Action::Allow, |a: &String| action(a));
    let rules: Vec<_> = h.rules.iter().enumerate().map(|(k, r)| rule(c, &p(&format!("rules[{k}]")), r)).collect();
    let limits: Vec<_> = h
        .rate_limits
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let p = |f: &str| format!("{prefix}rate_limits[{k}].{f}");
            let from = l.from.as_ref().map(|f| c.value(f, &p("from"), spiffe_id));
            let prefix = c.optional(&l.path_prefix, &p("path_prefix"), "/".to_owned(), path);
            let rate = c.required(&l.per_second, &p("per_second"), ranged(1, 10_000_000));
            let burst = c.optional(&l.burst, &p("burst"), rate.unwrap_or(1), ranged(1, 10_000_000));
            let from = match from {
                Some(None) => return None,
                Some(Some(id)) => Some(id),
                None => None,
            };
            Some(RateLimit { from, path_prefix: prefix?, per_second: rate? as u32, burst: burst? as u32 })
        })
        .collect();
    Some(HttpConfig {
        copy: copy?,
        max_head_bytes: max_head? as usize,
        max_headers: max_headers? as usize,
        request_head_timeout: Duration::from_millis(req_timeout? as u64),
        response_timeout: Duration::from_millis(resp_timeout? as u64),
        policy: HttpPolicy {
            rules: rules.into_iter().collect::<Option<_>>()?,
            default: default?,
            rate_limits: limits.into_iter().collect::<Option<_>>()?,
        },
    })
}

type Spanned<T> = Option<toml::Spanned<T>>;

/// What both kinds of `http` section share: the mode and the request-head limits, checked the
/// same way under `prefix`.
fn head_settings(
    c: &mut Check<'_>,
    prefix: &str,
    (mode, max_head_bytes, max_headers, request_head_timeout_ms): (
        &Spanned<String>,
        &Spanned<i64>,
        &Spanned<i64>,
        &Spanned<i64>,
    ),
) -> (Option<bool>, Option<i64>, Option<i64>, Option<i64>) {
    let p = |f: &str| format!("{prefix}{f}");
    let copy = c.optional(mode, &p("mode"), false, |m| match m.as_str() {
        "splice" => Ok(false),
        "copy" => Ok(true),
        other => Err(format!("{other:?} is not a mode (splice, copy)")),
    });
    let max_head = c.optional(max_head_bytes, &p("max_head_bytes"), 16 * 1024, ranged(1024, 1 << 20));
    let max_headers = c.optional(max_headers, &p("max_headers"), 100, ranged(1, 1000));
    let timeout = c.optional(request_head_timeout_ms, &p("request_head_timeout_ms"), 60_000, ranged(10, 3_600_000));
    (copy, max_head, max_headers, timeout)
}

fn rule(c: &mut Check<'_>, prefix: &str, r: &RawHttpRule) -> Option<HttpRule> {
    let p = |f: &str| format!("{prefix}.{f}");
    let action = c.required(&r.action, &p("action"), |a: &String| action(a));
    let from: Vec<_> =
        r.from.iter().enumerate().map(|(k, f)| c.value(f, &p(&format!("from[{k}]")), spiffe_id)).collect();
    let methods: Vec<_> = r
        .methods
        .iter()
        .enumerate()
        .map(|(k, m)| {
            c.value(m, &p(&format!("methods[{k}]")), |m: &String| {
                if !m.is_empty() && m.bytes().all(|b| b.is_ascii_uppercase()) {
                    Ok(m.clone())
                } else {
                    Err(format!("{m:?} is not a method (upper-case letters, e.g. GET)"))
                }
            })
        })
        .collect();
    let path_match = match (&r.path, &r.path_prefix) {
        (Some(_), Some(prefix_field)) => {
            c.error(&p("path_prefix"), Some(prefix_field.span().start), "give path or path_prefix, not both");
            None
        }
        (Some(exact), None) => c.value(exact, &p("path"), path).map(PathMatch::Exact),
        (None, Some(prefix_field)) => c.value(prefix_field, &p("path_prefix"), path).map(PathMatch::Prefix),
        (None, None) => Some(PathMatch::Any),
    };
    let headers: Vec<_> = r
        .headers
        .iter()
        .enumerate()
        .map(|(k, h)| {
            let name = c.required(&h.name, &p(&format!("headers[{k}].name")), |n: &String| {
                if !n.is_empty() && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)) {
                    Ok(n.to_ascii_lowercase())
                } else {
                    Err(format!("{n:?} is not a header name"))
                }
            });
            Some(HeaderMatch { name: name?, value: h.value.as_ref().map(|v| v.get_ref().as_bytes().to_vec()) })
        })
        .collect();
    Some(HttpRule {
        from: from.into_iter().collect::<Option<_>>()?,
        methods: methods.into_iter().collect::<Option<_>>()?,
        path: path_match?,
        headers: headers.into_iter().collect::<Option<_>>()?,
        action: action?,
    })
}

fn action(a: &str) -> Result<Action, String> {
    match a {
        "allow" => Ok(Action::Allow),
        "deny" => Ok(Action::Deny),
        other => Err(format!("{other:?} is not an action (allow, deny)")),
    }
}

/// A path in a rule must already be normal: what requests are compared against.
fn path(p: &String) -> Result<String, String> {
    match weir_policy::normalize_path(p) {
        Ok(n) if n == *p => Ok(n),
        Ok(n) => Err(format!("{p:?} is not a normalized path (it would match as {n:?})")),
        Err(e) => Err(format!("{p:?} is not a usable path: {e}")),
    }
}

/// HTTP/1.1 routing on one outbound listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundHttp {
    /// Move bodies through userspace even where splice could.
    pub copy: bool,
    /// Largest request or response head.
    pub max_head_bytes: usize,
    /// Most header fields in a head.
    pub max_headers: usize,
    /// Longest wait for a complete request head, idle time between requests included.
    pub request_head_timeout: Duration,
    /// Routes in order (first match wins); the last is always the catch-all to the listener's
    /// own service.
    pub routes: Vec<HttpRoute>,
}

/// Where matching requests go, and how patiently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    /// Host to match (lower case, no port); `None`: any.
    pub host: Option<String>,
    /// Path prefix to match, segment-aware (`/api` matches `/api/x`, not `/apix`).
    pub path_prefix: String,
    /// Mesh services (each the `service` of an `[[outbound]]` entry) and their weights.
    pub split: Vec<(String, u32)>,
    /// Connect plus mTLS handshake to the peer node.
    pub connect_timeout: Duration,
    /// From the request sent to the response head.
    pub response_timeout: Duration,
    /// Extra attempts for idempotent requests without a body that failed before any
    /// response byte.
    pub retries: u32,
}

/// Reads `protocol` and `http` of an outbound entry at `prefix` (e.g. `outbound[0].`).
pub(crate) fn outbound(c: &mut Check<'_>, prefix: &str, o: &RawOutbound) -> Option<Option<OutboundHttp>> {
    let protocol = c.optional(&o.protocol, &format!("{prefix}protocol"), "tcp".to_owned(), |p| match p.as_str() {
        "tcp" | "http" => Ok(p.clone()),
        other => Err(format!("{other:?} is not a protocol (tcp, http)")),
    })?;
    let service = o.service.as_ref().map(|s| s.get_ref().clone()).unwrap_or_default();
    match (protocol.as_str(), &o.http) {
        ("tcp", Some(_)) => {
            c.error(&format!("{prefix}http"), None, "an http section needs protocol = \"http\"");
            None
        }
        ("tcp", None) => Some(None),
        (_, raw) => outbound_http(c, &format!("{prefix}http."), raw.as_ref(), &service).map(Some),
    }
}

fn outbound_http(
    c: &mut Check<'_>,
    prefix: &str,
    raw: Option<&RawOutboundHttp>,
    service: &str,
) -> Option<OutboundHttp> {
    let empty = RawOutboundHttp {
        mode: None,
        max_head_bytes: None,
        max_headers: None,
        request_head_timeout_ms: None,
        connect_timeout_ms: None,
        response_timeout_ms: None,
        retries: None,
        routes: Vec::new(),
    };
    let h = raw.unwrap_or(&empty);
    let p = |f: &str| format!("{prefix}{f}");
    let (copy, max_head, max_headers, req_timeout) =
        head_settings(c, prefix, (&h.mode, &h.max_head_bytes, &h.max_headers, &h.request_head_timeout_ms));
    let connect = c.optional(&h.connect_timeout_ms, &p("connect_timeout_ms"), 5_000, ranged(10, 600_000));
    let response = c.optional(&h.response_timeout_ms, &p("response_timeout_ms"), 30_000, ranged(10, 3_600_000));
    let retries = c.optional(&h.retries, &p("retries"), 1, ranged(0, 5));
    let defaults = (connect?, response?, retries?);
    let mut routes: Vec<_> =
        h.routes.iter().enumerate().map(|(k, r)| route(c, &p(&format!("routes[{k}]")), r, defaults)).collect();
    routes.push(Some(HttpRoute {
        host: None,
        path_prefix: "/".into(),
        split: vec![(service.to_owned(), 1)],
        connect_timeout: ms(defaults.0),
        response_timeout: ms(defaults.1),
        retries: defaults.2 as u32,
    }));
    Some(OutboundHttp {
        copy: copy?,
        max_head_bytes: max_head? as usize,
        max_headers: max_headers? as usize,
        request_head_timeout: ms(req_timeout?),
        routes: routes.into_iter().collect::<Option<_>>()?,
    })
}

fn ms(v: i64) -> Duration {
    Duration::from_millis(v as u64)
}

fn route(c: &mut Check<'_>, prefix: &str, r: &RawRoute, defaults: (i64, i64, i64)) -> Option<HttpRoute> {
    let p = |f: &str| format!("{prefix}.{f}");
    let host = r.host.as_ref().map(|h| {
        c.value(h, &p("host"), |h: &String| {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            if ok {
                Ok(h.to_ascii_lowercase())
            } else {
                Err(format!("{h:?} is not a host name (no port, no scheme)"))
            }
        })
    });
    let prefix_path = c.optional(&r.path_prefix, &p("path_prefix"), "/".to_owned(), path);
    if r.split.is_empty() {
        c.error(&p("split"), None, "a route needs at least one { service, weight }");
    }
    let split: Vec<_> = r
        .split
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let service = c.required(&s.service, &p(&format!("split[{k}].service")), service_name);
            let weight = c.optional(&s.weight, &p(&format!("split[{k}].weight")), 1, ranged(1, 10_000));
            Some((service?, weight? as u32))
        })
        .collect();
    let connect = c.optional(&r.connect_timeout_ms, &p("connect_timeout_ms"), defaults.0, ranged(10, 600_000));
    let response = c.optional(&r.response_timeout_ms, &p("response_timeout_ms"), defaults.1, ranged(10, 3_600_000));
    let retries = c.optional(&r.retries, &p("retries"), defaults.2, ranged(0, 5));
    Some(HttpRoute {
        host: host.map_or(Some(None), |h| h.map(Some))?,
        path_prefix: prefix_path?,
        split: split.into_iter().collect::<Option<_>>()?,
        connect_timeout: ms(connect?),
        response_timeout: ms(response?),
        retries: retries? as u32,
    })
}

/// Every split names the `service` of some outbound entry (that entry says where its peer
/// is); an entry with neither listen nor capture must be such a target.
/// On a DPU (`reached_by_host_channel`) every route is a target: the host plane names it in
/// its preamble.
pub(crate) fn check_splits(c: &mut Check<'_>, outbound: &[RawOutbound], reached_by_host_channel: bool) {
    let services: std::collections::HashSet<&str> =
        outbound.iter().filter_map(|o| o.service.as_ref().map(|s| s.get_ref().as_str())).collect();
    let mut targets = std::collections::HashSet::new();
    for (n, o) in outbound.iter().enumerate() {
        for (k, r) in o.http.iter().flat_map(|h| h.routes.iter()).enumerate() {
            for (j, s) in r.split.iter().enumerate() {
                let Some(name) = &s.service else { continue };
                targets.insert(name.get_ref().as_str());
                if !services.contains(name.get_ref().as_str()) {
                    c.error(
                        &format!("outbound[{n}].http.routes[{k}].split[{j}].service"),
                        Some(name.span().start),
                        format!("{:?} is not the service of any [[outbound]] entry", name.get_ref()),
                    );
                }
            }
        }
    }
    for (n, o) in outbound.iter().enumerate() {
        let target = o.service.as_ref().is_some_and(|s| targets.contains(s.get_ref().as_str()));
        if o.listen.is_none() && o.capture.is_empty() && !target && !reached_by_host_channel {
            c.error(
                &format!("outbound[{n}].listen"),
                None,
                "a route needs a listen address, a capture list, or to be the target of an HTTP route split (or a DPU's)",
            );
        }
    }
}
