//! Request and response heads, and how their bodies are framed (RFC 9112 §6).
use crate::Error;

/// Head size limits (from config).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest head, request line and fields included.
    pub max_head_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_head_bytes: 16 * 1024, max_headers: 100 }
    }
}

/// The outcome of parsing what has arrived so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<T> {
    /// The head is not complete yet: read more (the limit is already checked).
    Partial,
    /// A complete head of `len` bytes; body bytes, if any, follow it.
    Complete {
        /// The head.
        head: T,
        /// Its length in bytes.
        len: usize,
    },
}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the sender closes (responses only).
    UntilClose,
}

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHead {
    /// Method token.
    pub method: String,
    /// Request target as sent.
    pub target: String,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Fields in order: (name as sent, value bytes).
    pub headers: Vec<(String, Vec<u8>)>,
    /// How the body is framed.
    pub body: BodyFraming,
    /// Whether the connection stays open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An Upgrade request or CONNECT: after a 101/2xx the connection becomes opaque bytes.
    pub upgrade: bool,
}

/// A parsed response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code.
    pub status: u16,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Fields in order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// How the body is framed, given the request it answers.
    pub body: BodyFraming,
    /// Whether the connection stays open after this exchange.
    pub keep_alive: bool,
}

fn values<'a>(headers: &'a [(String, Vec<u8>)], name: &'a str) -> impl Iterator<Item = &'a [u8]> + 'a {
    headers.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_slice())
}

/// The comma-separated list elements of every `name` field, trimmed and lowercased.
fn tokens(headers: &[(String, Vec<u8>)], name: &str) -> Vec<String> {
    values(headers, name)
        .flat_map(|v| v.split(|b| *b == b','))
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

/// Whether a comma-separated list element of any `name` field equals `token` (ASCII
/// case-insensitively), without allocating: this runs on every request.
fn has_token(headers: &[(String, Vec<u8>)], name: &str, token: &str) -> bool {
    values(headers, name).flat_map(|v| v.split(|b| *b == b',')).any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Content-Length: every value (and list element) decimal digits only, all equal.
fn content_length(headers: &[(String, Vec<u8>)]) -> Result<Option<u64>, Error> {
    let mut found: Option<u64> = None;
    for v in values(headers, "content-length") {
        for part in v.split(|b| *b == b',') {
            let part = trim(part);
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(Error::BadContentLength);
            }
            let n =
                std::str::from_utf8(part).ok().and_then(|s| s.parse::<u64>().ok()).ok_or(Error::BadContentLength)?;
            match found {
                Some(prev) if prev != n => return Err(Error::BadContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b.iter().position(|c| !matches!(c, b' ' | b'\t')).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !matches!(c, b' ' | b'\t')).map_or(start, |e| e + 1);
    &b[start..end]
}

/// Transfer-Encoding present: the final coding must be `chunked`, exactly once, all tokens.
fn chunked(headers: &[(String, Vec<u8>)], minor_version: u8) -> Result<bool, Error> {
    if values(headers, "transfer-encoding").next().is_none() {
        return Ok(false);
    }
    let codings = tokens(headers, "transfer-encoding");
    // HTTP/1.0 has no transfer codings: a TE field there is a smuggling attempt or a bug.
    let valid = minor_version == 1
        && codings.last().map(String::as_str) == Some("chunked")
        && codings.iter().filter(|c| *c == "chunked").count() == 1
        && codings.iter().all(|c| is_token(c));
    if valid {
        Ok(true)
    } else {
        Err(Error::BadTransferEncoding)
    }
}

fn keep_alive(headers: &[(String, Vec<u8>)], minor_version: u8) -> bool {
    if has_token(headers, "connection", "close") {
        return false;
    }
    minor_version == 1 || has_token(headers, "connection", "keep-alive")
}

fn owned(raw: &[httparse::Header<'_>]) -> Result<Vec<(String, Vec<u8>)>, Error> {
    raw.iter()
        .map(|h| {
            // httparse accepts obs-text and HTAB in values; a CR or LF that survived would be a
            // field injection.
            if h.value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
                return Err(Error::Syntax("control character in a field value"));
            }
            Ok((h.name.to_owned(), h.value.to_vec()))
        })
        .collect()
}

fn syntax(e: httparse::Error, limits: &Limits) -> Error {
    match e {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders(limits.max_headers),
        httparse::Error::Version => Error::Version,
        httparse::Error::HeaderName => Error::Syntax("invalid header name (or whitespace before the colon)"),
        httparse::Error::HeaderValue => Error::Syntax("invalid header value"),
        httparse::Error::NewLine => Error::Syntax("invalid line ending (bare CR or LF)"),
        httparse::Error::Status => Error::Syntax("invalid status"),
        httparse::Error::Token => Error::Syntax("invalid token"),
    }
}

/// The head's length once complete, `None` while partial; either way within the size limit.
fn head_len(parsed: httparse::Result<usize>, have: usize, limits: &Limits) -> Result<Option<usize>, Error> {
    match parsed.map_err(|e| syntax(e, limits))? {
        httparse::Status::Partial if have >= limits.max_head_bytes => Err(Error::HeadTooLarge(limits.max_head_bytes)),
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) if n > limits.max_head_bytes => Err(Error::HeadTooLarge(limits.max_head_bytes)),
        httparse::Status::Complete(n) => Ok(Some(n)),
    }
}

/// Header slots kept on the stack for the common limit; larger limits use the heap.
const STACK_HEADERS: usize = 128;

/// `limits.max_headers` slots for httparse: on the stack when they fit (this runs for every
/// head, and is re-run while a head arrives in pieces).
fn header_slots<'s, 'h>(
    stack: &'s mut [httparse::Header<'h>; STACK_HEADERS],
    heap: &'s mut Vec<httparse::Header<'h>>,
    limits: &Limits,
) -> &'s mut [httparse::Header<'h>] {
    if limits.max_headers <= STACK_HEADERS {
        &mut stack[..limits.max_headers]
    } else {
        *heap = vec![httparse::EMPTY_HEADER; limits.max_headers];
        heap
    }
}

/// Parses a request head from the start of `buf`.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Parsed<RequestHead>, Error> {
    let (mut stack, mut heap) = ([httparse::EMPTY_HEADER; STACK_HEADERS], Vec::new());
    let mut req = httparse::Request::new(header_slots(&mut stack, &mut heap, limits));
    let Some(len) = head_len(req.parse(buf), buf.len(), limits)? else { return Ok(Parsed::Partial) };
    let (method, target, minor_version) = match (req.method, req.path, req.version) {
        (Some(m), Some(p), Some(v)) => (m.to_owned(), p.to_owned(), v),
        _ => return Err(Error::Syntax("incomplete request line")),
    };
    let headers = owned(req.headers)?;
    let chunked = chunked(&headers, minor_version)?;
    let length = content_length(&headers)?;
    let body = match (chunked, length) {
        (true, Some(_)) => return Err(Error::LengthAndChunked),
        (true, None) => BodyFraming::Chunked,
        (false, Some(0) | None) => BodyFraming::None,
        (false, Some(n)) => BodyFraming::Length(n),
    };
    let expect_continue = values(&headers, "expect").any(|v| trim(v).eq_ignore_ascii_case(b"100-continue"));
    let upgrade = method == "CONNECT"
        || (has_token(&headers, "connection", "upgrade") && values(&headers, "upgrade").next().is_some());
    let keep_alive = keep_alive(&headers, minor_version);
    Ok(Parsed::Complete {
        head: RequestHead { method, target, minor_version, headers, body, keep_alive, expect_continue, upgrade },
        len,
    })
}

/// Parses a response head from the start of `buf`; `request_method` decides bodiless cases.
pub fn parse_response(buf: &[u8], limits: &Limits, request_method: &str) -> Result<Parsed<ResponseHead>, Error> {
    let (mut stack, mut heap) = ([httparse::EMPTY_HEADER; STACK_HEADERS], Vec::new());
    let mut resp = httparse::Response::new(header_slots(&mut stack, &mut heap, limits));
    let Some(len) = head_len(resp.parse(buf), buf.len(), limits)? else { return Ok(Parsed::Partial) };
    let (status, minor_version) = match (resp.code, resp.version) {
        (Some(c), Some(v)) => (c, v),
        _ => return Err(Error::Syntax("incomplete status line")),
    };
    let headers = owned(resp.headers)?;
    let bodiless = request_method == "HEAD"
        || (100..200).contains(&status)
        || status == 204
        || status == 304
        || (request_method == "CONNECT" && (200..300).contains(&status));
    let chunked = chunked(&headers, minor_version)?;
    let length = content_length(&headers)?;
    let body = match (bodiless, chunked, length) {
        (true, _, _) => BodyFraming::None,
        (false, true, Some(_)) => return Err(Error::LengthAndChunked),
        (false, true, None) => BodyFraming::Chunked,
        (false, false, Some(0)) => BodyFraming::None,
        (false, false, Some(n)) => BodyFraming::Length(n),
        (false, false, None) => BodyFraming::UntilClose,
    };
    let keep_alive = body != BodyFraming::UntilClose && keep_alive(&headers, minor_version);
    Ok(Parsed::Complete { head: ResponseHead { status, minor_version, headers, body, keep_alive }, len })
}

#[cfg(test)]
mod tests;
