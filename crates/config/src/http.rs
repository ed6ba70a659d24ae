//! The `http` section of an inbound service: how Weir handles HTTP/1.1 on it (head-only
//! splice or full copy), head limits and timeouts, and the L7 rules, compiled to
//! `weir_policy::HttpPolicy`.
use crate::raw::{RawHttp, RawHttpRule, RawService};
use crate::typed::{ranged, spiffe_id, Check};
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
    let copy = c.optional(&h.mode, &p("mode"), false, |m| match m.as_str() {
        "splice" => Ok(false),
        "copy" => Ok(true),
        other => Err(format!("{other:?} is not a mode (splice, copy)")),
    });
    let max_head = c.optional(&h.max_head_bytes, &p("max_head_bytes"), 16 * 1024, ranged(1024, 1 << 20));
    let max_headers = c.optional(&h.max_headers, &p("max_headers"), 100, ranged(1, 1000));
    let req_timeout =
        c.optional(&h.request_head_timeout_ms, &p("request_head_timeout_ms"), 60_000, ranged(10, 3_600_000));
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
