//! Writing heads: a forwarded request head with fields set or replaced, and the short local
//! answers Weir gives itself (403, 429, 400, 502…).

use crate::RequestHead;

/// The request head as it goes upstream: method and version as received, `target` as the
/// request-target, fields as received except that every field named in `set`
/// (case-insensitive) is replaced by the given value.
pub fn encode_request(head: &RequestHead, target: &str, set: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(if head.minor_version == 0 { b" HTTP/1.0\r\n" } else { b" HTTP/1.1\r\n" });
    for (name, value) in &head.headers {
        if set.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            continue;
        }
        field(&mut out, name, value);
    }
    for (name, value) in set {
        field(&mut out, name, value);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A complete response Weir sends itself, with `Connection: close` (the connection ends after
/// it). `body` is a short plain-text reason.
pub fn local_response(status: u16, extra: &[(&str, &str)], body: &str) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status} {}\r\n", reason(status)).into_bytes();
    for (name, value) in extra {
        field(&mut out, name, value.as_bytes());
    }
    let body = format!("{body}\n");
    field(&mut out, "content-type", b"text/plain; charset=utf-8");
    field(&mut out, "content-length", body.len().to_string().as_bytes());
    field(&mut out, "connection", b"close");
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The answer to a refused or failed message: its status and a reason.
pub fn error_response(status: u16, why: &str) -> Vec<u8> {
    local_response(status, &[], why)
}

fn reason(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        403 => "Forbidden",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{parse_request, parse_response, Limits, Parsed};

    #[test]
    fn a_rewritten_request_replaces_named_fields_and_keeps_the_rest_in_order() {
        let raw = b"GET /a?b HTTP/1.1\r\nHost: x\r\nTraceparent: old\r\nAccept: */*\r\n\r\n";
        let Ok(Parsed::Complete { head, .. }) = parse_request(raw, &Limits::default()) else { panic!("parses") };
        let out = encode_request(&head, "/c?b", &[("traceparent", b"new")]);
        assert_eq!(out, b"GET /c?b HTTP/1.1\r\nHost: x\r\nAccept: */*\r\ntraceparent: new\r\n\r\n".to_vec());
        assert_eq!(encode_request(&head, &head.target, &[]), raw.to_vec(), "no changes: byte-identical");
    }

    #[test]
    fn local_responses_are_well_framed_and_close() {
        let out = local_response(429, &[("retry-after", "2")], "rate limited");
        let Ok(Parsed::Complete { head, len }) = parse_response(&out, &Limits::default(), "GET") else {
            panic!("parses")
        };
        assert_eq!(head.status, 429);
        assert!(!head.keep_alive);
        assert_eq!(head.body, crate::BodyFraming::Length((out.len() - len) as u64));
        assert!(head.headers.iter().any(|(n, v)| n == "retry-after" && v == b"2"));
    }
}
