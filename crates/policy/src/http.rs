//! L7 rules on HTTP/1.1 request heads: which sources may use which methods, paths and headers
//! (first matching rule wins, else the policy default), and per-source token-bucket rate limits
//! per route. Pure: the caller passes the request facts and the current time, and turns the
//! verdict into a response ([`HttpVerdict::status`]).
//!
//! Rules see the normalized path ([`normalize_path`]), never the raw request-target, so that
//! spellings a backend treats as one resource (`//admin`, `/%61dmin`, `/x/../admin`) cannot slip
//! past a rule written for one of them. Targets whose meaning depends on how the backend decodes
//! them (`%2F`, backslashes, broken escapes) are refused rather than guessed at.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::time::Instant;
use weir_identity::SpiffeId;

/// Bounds the limiter's memory whatever the number of distinct sources.
const MAX_BUCKETS: usize = 10_000;

/// A token is this many nano-tokens, so refill (`elapsed_ns * per_second`) is exact integer math.
const NANOS_PER_TOKEN: u128 = 1_000_000_000;

/// How a request path is matched. Patterns are compared with the normalized path, so write
/// them normalized ([`HttpPolicy::validate`] checks this).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathMatch {
    /// Every path.
    Any,
    /// Exactly this path.
    Exact(String),
    /// This path and everything below it: `/api` matches `/api` and `/api/x`, not `/apix`.
    /// A prefix ending in `/` is a plain string prefix (`/api/` does not match `/api`).
    Prefix(String),
}

/// A header condition: field name (case-insensitive) and an exact value, or presence only.
/// With repeated fields, any one field of that name may satisfy it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderMatch {
    /// Field name, compared ASCII case-insensitively.
    pub name: String,
    /// Exact value bytes; `None` = the field only has to be present.
    pub value: Option<Vec<u8>>,
}

/// What a matching rule (or the default) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Let the request through.
    Allow,
    /// Refuse it (403).
    Deny,
}

/// One L7 rule; it matches when every condition holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRule {
    /// Source identities; empty = any source.
    pub from: Vec<SpiffeId>,
    /// Methods, compared exactly (methods are case-sensitive tokens); empty = any.
    pub methods: Vec<String>,
    /// Path condition, on the normalized path.
    pub path: PathMatch,
    /// Header conditions; all must match.
    pub headers: Vec<HeaderMatch>,
    /// What to do on a match.
    pub action: Action,
}

/// A token-bucket limit on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimit {
    /// The source it applies to; `None` = every source, with one bucket per source identity.
    pub from: Option<SpiffeId>,
    /// The route covered, matched like [`PathMatch::Prefix`].
    pub path_prefix: String,
    /// Refill rate in tokens per second (> 0).
    pub per_second: u32,
    /// Bucket size (> 0).
    pub burst: u32,
}

/// The L7 policy of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPolicy {
    /// Rules in order; the first match decides.
    pub rules: Vec<HttpRule>,
    /// The action when no rule matches.
    pub default: Action,
    /// Rate limits in order; the first matching one applies.
    pub rate_limits: Vec<RateLimit>,
}

/// What the policy sees of a request head.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// The authenticated peer.
    pub source: &'a SpiffeId,
    /// The request method.
    pub method: &'a str,
    /// The raw request-target.
    pub target: &'a str,
    /// Header fields as received.
    pub headers: &'a [(String, Vec<u8>)],
}

/// The outcome of an L7 check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpVerdict {
    /// Let it through.
    Allow,
    /// Refused (403).
    Deny {
        /// Index of the deny rule; `None` = the default denied.
        rule: Option<usize>,
    },
    /// A target that cannot be matched safely (400), with the reason.
    BadTarget(&'static str),
    /// Over a rate limit (429).
    RateLimited {
        /// Seconds until a token is available, for `Retry-After` (at least 1).
        retry_after_secs: u64,
    },
}

impl HttpVerdict {
    /// The HTTP status to answer with (200 = forward the request).
    pub fn status(&self) -> u16 {
        match self {
            Self::Allow => 200,
            Self::Deny { .. } => 403,
            Self::BadTarget(_) => 400,
            Self::RateLimited { .. } => 429,
        }
    }

    /// A stable, low-cardinality metric label.
    pub fn as_label(&self) -> &'static str {
        match self {
            Self::Allow => "allow",
            Self::Deny { .. } => "deny",
            Self::BadTarget(_) => "bad_target",
            Self::RateLimited { .. } => "rate_limited",
        }
    }
}

impl HttpPolicy {
    /// Applies the rules (not the rate limits) to a request: first match wins, else the default.
    /// Normalizes the target itself, so a raw target cannot bypass a rule.
    pub fn evaluate(&self, facts: &RequestFacts<'_>) -> HttpVerdict {
        match request_path(facts) {
            Ok(path) => self.evaluate_path(facts, &path),
            Err(reason) => HttpVerdict::BadTarget(reason),
        }
    }

    /// Reports patterns that can never match (not normalized) and unusable rate limits, so a
    /// loader can refuse them instead of enforcing a rule that silently does nothing.
    pub fn validate(&self) -> Result<(), String> {
        for (i, rule) in self.rules.iter().enumerate() {
            if let PathMatch::Exact(p) | PathMatch::Prefix(p) = &rule.path {
                check_normalized(p).map_err(|e| format!("rule {i}: {e}"))?;
            }
            if rule.headers.iter().any(|h| h.name.is_empty()) {
                return Err(format!("rule {i}: empty header name"));
            }
        }
        for (i, limit) in self.rate_limits.iter().enumerate() {
            if limit.per_second == 0 || limit.burst == 0 {
                return Err(format!("rate limit {i}: per_second and burst must be > 0"));
            }
            check_normalized(&limit.path_prefix).map_err(|e| format!("rate limit {i}: {e}"))?;
        }
        Ok(())
    }

    fn evaluate_path(&self, facts: &RequestFacts<'_>, path: &str) -> HttpVerdict {
        match self.rules.iter().enumerate().find(|(_, r)| r.matches(facts, path)) {
            Some((_, HttpRule { action: Action::Allow, .. })) => HttpVerdict::Allow,
            Some((i, _)) => HttpVerdict::Deny { rule: Some(i) },
            None if self.default == Action::Allow => HttpVerdict::Allow,
            None => HttpVerdict::Deny { rule: None },
        }
    }
}

impl HttpRule {
    fn matches(&self, facts: &RequestFacts<'_>, path: &str) -> bool {
        (self.from.is_empty() || self.from.contains(facts.source))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m == facts.method))
            && self.path.matches(path)
            && self.headers.iter().all(|h| h.matches(facts.headers))
    }
}

impl PathMatch {
    fn matches(&self, path: &str) -> bool {
        match self {
            Self::Any => true,
            Self::Exact(p) => p == path,
            Self::Prefix(p) => prefix_matches(p, path),
        }
    }
}

impl HeaderMatch {
    fn matches(&self, headers: &[(String, Vec<u8>)]) -> bool {
        headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case(&self.name) && self.value.as_ref().is_none_or(|v| v == value)
        })
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix).is_some_and(|rest| prefix.ends_with('/') || rest.is_empty() || rest.starts_with('/'))
}

fn check_normalized(p: &str) -> Result<(), String> {
    match normalize_path(p) {
        Ok(n) if n == p => Ok(()),
        Ok(n) => Err(format!("path {p:?} never matches: requests are normalized to {n:?}")),
        Err(e) => Err(format!("path {p:?}: {e}")),
    }
}

/// The normalized path of a request; `*` only makes sense for OPTIONS, so elsewhere it is refused.
fn request_path(facts: &RequestFacts<'_>) -> Result<String, &'static str> {
    let path = normalize_path(facts.target)?;
    if path == "*" && facts.method != "OPTIONS" {
        return Err("* target is only for OPTIONS");
    }
    Ok(path)
}

/// Reduces a request-target to the canonical path that rules match: origin-form, absolute-form
/// (`http[s]://host/path`) or `*`; query and fragment dropped; unreserved characters decoded,
/// other escapes kept with upper-case hex; dot segments removed (RFC 3986 §5.2.4, never above
/// the root); repeated slashes merged. Refuses encoded `/`, `\` or NUL, raw backslashes, bytes
/// outside visible ASCII, broken escapes, and other target forms.
pub fn normalize_path(target: &str) -> Result<String, &'static str> {
    if target == "*" {
        return Ok("*".to_owned());
    }
    if !target.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("control, space or non-ASCII byte in target");
    }
    // Some backends treat `\` as `/`, so it cannot be matched as an ordinary character.
    if target.contains('\\') {
        return Err("backslash in target");
    }
    let target = target.find(['?', '#']).map_or(target, |end| &target[..end]);
    let path = if target.starts_with('/') {
        target
    } else {
        let (scheme, rest) = target.split_once("://").ok_or("target is not origin-form, absolute-form or *")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return Err("absolute-form target is not http or https");
        }
        rest.find('/').map_or("/", |start| &rest[start..])
    };
    if is_normal(path) {
        return Ok(path.to_owned());
    }
    Ok(remove_dot_segments(&decode_unreserved(path)?))
}

/// Already normal (the common case, checked without allocating): no escapes, no empty, `.` or
/// `..` segment before the last, and a last segment that is not `.` or `..`.
fn is_normal(path: &str) -> bool {
    if path.contains('%') {
        return false;
    }
    let mut segments = path.split('/').skip(1).peekable();
    while let Some(s) = segments.next() {
        let last = segments.peek().is_none();
        if s == "." || s == ".." || (s.is_empty() && !last) {
            return false;
        }
    }
    true
}

fn decode_unreserved(path: &str) -> Result<String, &'static str> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            out.push(char::from(bytes[i]));
            i += 1;
            continue;
        }
        let byte = bytes
            .get(i + 1..i + 3)
            .and_then(|h| Some((hex_value(h[0])? << 4) | hex_value(h[1])?))
            .ok_or("invalid percent escape")?;
        match byte {
            // A backend that decodes before splitting would see a different path than we match.
            b'/' | b'\\' => return Err("encoded slash or backslash"),
            0 => return Err("encoded NUL"),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(char::from(b)),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
        i += 3;
    }
    Ok(out)
}

fn hex_value(h: u8) -> Option<u8> {
    char::from(h).to_digit(16).and_then(|d| u8::try_from(d).ok())
}

/// `path` starts with `/`. Empty segments are dropped too, which merges repeated slashes.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in path.split('/').skip(1) {
        match segment {
            "" | "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}

/// Token buckets keyed by (rate-limit index, source). Keys are indices into the policy, so
/// [`clear`](Self::clear) it when the policy is replaced.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: HashMap<(usize, SpiffeId), Bucket>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    nanotokens: u128,
    last: Instant,
}

impl Bucket {
    fn refill(&mut self, limit: &RateLimit, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_nanos();
        let added = elapsed.saturating_mul(u128::from(limit.per_second));
        self.nanotokens = self.nanotokens.saturating_add(added).min(capacity(limit));
        self.last = self.last.max(now);
    }

    fn take(&mut self, limit: &RateLimit) -> Result<(), u64> {
        if self.nanotokens >= NANOS_PER_TOKEN {
            self.nanotokens -= NANOS_PER_TOKEN;
            return Ok(());
        }
        if limit.per_second == 0 || limit.burst == 0 {
            return Err(u64::MAX);
        }
        let wait_ns = (NANOS_PER_TOKEN - self.nanotokens).div_ceil(u128::from(limit.per_second));
        Err(u64::try_from(wait_ns.div_ceil(NANOS_PER_TOKEN)).unwrap_or(u64::MAX).max(1))
    }
}

fn capacity(limit: &RateLimit) -> u128 {
    u128::from(limit.burst) * NANOS_PER_TOKEN
}

impl RateLimiter {
    /// An empty limiter (every bucket starts full).
    pub fn new() -> Self {
        Self::default()
    }

    /// First rate limit whose `from` and prefix match; takes one token, or says how many seconds
    /// until one is available (rounded up, at least 1). `path` is normalized here; a target that
    /// cannot be normalized, or a new source when the bucket map is full, is refused (`Err(1)`).
    pub fn check(&mut self, policy: &HttpPolicy, source: &SpiffeId, path: &str, now: Instant) -> Result<(), u64> {
        match normalize_path(path) {
            Ok(path) => self.check_path(policy, source, &path, now),
            Err(_) => Err(1),
        }
    }

    /// Buckets held.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// True when no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Forgets every bucket.
    pub fn clear(&mut self) {
        self.buckets.clear();
    }

    fn check_path(&mut self, policy: &HttpPolicy, source: &SpiffeId, path: &str, now: Instant) -> Result<(), u64> {
        let Some((index, limit)) = policy
            .rate_limits
            .iter()
            .enumerate()
            .find(|(_, l)| l.from.as_ref().is_none_or(|f| f == source) && prefix_matches(&l.path_prefix, path))
        else {
            return Ok(());
        };
        let key = (index, source.clone());
        // The common case, an existing bucket: one lookup.
        if let Some(bucket) = self.buckets.get_mut(&key) {
            bucket.refill(limit, now);
            return bucket.take(limit);
        }
        if self.buckets.len() >= MAX_BUCKETS {
            self.evict_idle(policy, now);
            if self.buckets.len() >= MAX_BUCKETS {
                return Err(1);
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket { nanotokens: capacity(limit), last: now });
        bucket.refill(limit, now);
        bucket.take(limit)
    }

    /// A full bucket is indistinguishable from a new one, so dropping it loses nothing.
    fn evict_idle(&mut self, policy: &HttpPolicy, now: Instant) {
        self.buckets.retain(|(index, _), bucket| match policy.rate_limits.get(*index) {
            Some(limit) => {
                bucket.refill(limit, now);
                bucket.nanotokens < capacity(limit)
            }
            None => false,
        });
    }
}

/// The whole L7 decision: normalize the target, apply the rules, and charge the rate limit
/// only for requests the rules allow (a denied request costs the source nothing).
pub fn decide(policy: &HttpPolicy, limiter: &mut RateLimiter, facts: &RequestFacts<'_>, now: Instant) -> HttpVerdict {
    let path = match request_path(facts) {
        Ok(path) => path,
        Err(reason) => return HttpVerdict::BadTarget(reason),
    };
    match policy.evaluate_path(facts, &path) {
        HttpVerdict::Allow => match limiter.check_path(policy, facts.source, &path, now) {
            Ok(()) => HttpVerdict::Allow,
            Err(retry_after_secs) => HttpVerdict::RateLimited { retry_after_secs },
        },
        verdict => verdict,
    }
}

#[cfg(test)]
mod tests;
