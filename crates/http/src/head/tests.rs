use super::*;

fn req(b: &[u8]) -> Result<RequestHead, Error> {
    match parse_request(b, &Limits::default())? {
        Parsed::Complete { head, len } => {
            assert_eq!(len, b.len(), "test inputs are exactly one head");
            Ok(head)
        }
        Parsed::Partial => panic!("incomplete test input {:?}", String::from_utf8_lossy(b)),
    }
}

fn resp(b: &[u8], method: &str) -> Result<ResponseHead, Error> {
    match parse_response(b, &Limits::default(), method)? {
        Parsed::Complete { head, .. } => Ok(head),
        Parsed::Partial => panic!("incomplete test input"),
    }
}

fn status(r: Result<RequestHead, Error>) -> u16 {
    r.expect_err("must be refused").status()
}

#[test]
fn parses_a_simple_request_and_keep_alive_rules() {
    let h = req(b"GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\n").expect("valid");
    assert_eq!((h.method.as_str(), h.target.as_str(), h.minor_version), ("GET", "/a?b=1", 1));
    assert_eq!(h.body, BodyFraming::None);
    assert!(h.keep_alive && !h.expect_continue && !h.upgrade);
    assert!(!req(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").expect("valid").keep_alive);
    assert!(!req(b"GET / HTTP/1.0\r\n\r\n").expect("valid").keep_alive);
    assert!(req(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("valid").keep_alive);
}

#[test]
fn partial_heads_wait_for_more_at_every_byte() {
    let full = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\n";
    for n in 0..full.len() {
        assert_eq!(parse_request(&full[..n], &Limits::default()), Ok(Parsed::Partial), "prefix {n}");
    }
    let mut with_body = full.to_vec();
    with_body.extend_from_slice(b"abc");
    match parse_request(&with_body, &Limits::default()) {
        Ok(Parsed::Complete { head, len }) => {
            assert_eq!(len, full.len(), "the body is not part of the head");
            assert_eq!(head.body, BodyFraming::Length(3));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn content_length_forms() {
    assert_eq!(req(b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n").expect("valid").body, BodyFraming::Length(10));
    assert_eq!(req(b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n").expect("valid").body, BodyFraming::None);
    assert_eq!(
        req(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n").expect("same twice").body,
        BodyFraming::Length(5)
    );
    assert_eq!(
        req(b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n").expect("same list").body,
        BodyFraming::Length(5)
    );
    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 5a\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
    ] {
        assert_eq!(req(bad), Err(Error::BadContentLength), "{:?}", String::from_utf8_lossy(bad));
        assert_eq!(status(req(bad)), 400);
    }
}

#[test]
fn transfer_encoding_must_end_in_chunked_once() {
    assert_eq!(
        req(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n").expect("valid").body,
        BodyFraming::Chunked
    );
    assert_eq!(
        req(b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").expect("valid").body,
        BodyFraming::Chunked
    );
    for bad in [
        &b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n",
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        assert_eq!(req(bad), Err(Error::BadTransferEncoding), "{:?}", String::from_utf8_lossy(bad));
    }
    let cl_te = req(b"POST / HTTP/1.1\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n");
    assert_eq!(cl_te, Err(Error::LengthAndChunked), "CL.TE smuggling");
    assert_eq!(status(cl_te), 400);
}

#[test]
fn rejects_syntax_that_enables_smuggling() {
    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding\t: chunked\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\r\n  folded\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n",
        b"GET / HTTP/1.1\rHost: x\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"G@T / HTTP/1.1\r\n\r\n",
    ] {
        assert_eq!(status(req(bad)), 400, "{:?}", String::from_utf8_lossy(bad));
    }
    assert_eq!(parse_request(b"GET / HTTP/2.0\r\n\r\n", &Limits::default()).map(|_| ()), Err(Error::Version));
}

#[test]
fn oversized_heads_get_431() {
    let limits = Limits { max_head_bytes: 64, max_headers: 4 };
    let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100));
    assert_eq!(parse_request(long.as_bytes(), &limits), Err(Error::HeadTooLarge(64)));
    assert_eq!(
        parse_request(&long.as_bytes()[..70], &limits),
        Err(Error::HeadTooLarge(64)),
        "refused before it completes"
    );
    let many = b"GET / HTTP/1.1\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\ne: 5\r\n\r\n";
    let err = parse_request(many, &Limits { max_head_bytes: 1024, max_headers: 4 }).map(|_| ()).expect_err("too many");
    assert_eq!((err.clone(), err.status()), (Error::TooManyHeaders(4), 431));
}

#[test]
fn expect_continue_and_upgrade() {
    assert!(
        req(b"PUT / HTTP/1.1\r\nContent-Length: 9\r\nExpect: 100-Continue\r\n\r\n").expect("valid").expect_continue
    );
    let ws = req(b"GET /ws HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n").expect("valid");
    assert!(ws.upgrade);
    assert!(
        !req(b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").expect("valid").upgrade,
        "Upgrade without Connection: upgrade"
    );
    assert!(req(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n").expect("valid").upgrade);
}

#[test]
fn response_framing() {
    let r = resp(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "GET").expect("valid");
    assert_eq!((r.status, r.body, r.keep_alive), (200, BodyFraming::Length(12), true));
    assert_eq!(resp(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", "HEAD").expect("valid").body, BodyFraming::None);
    for s in [
        b"HTTP/1.1 204 No Content\r\n\r\n".as_slice(),
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ] {
        assert_eq!(resp(s, "GET").expect("valid").body, BodyFraming::None);
    }
    assert_eq!(resp(b"HTTP/1.1 200 OK\r\n\r\n", "CONNECT").expect("valid").body, BodyFraming::None);
    assert_eq!(
        resp(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", "GET").expect("valid").body,
        BodyFraming::Chunked
    );
    let close = resp(b"HTTP/1.1 200 OK\r\n\r\n", "GET").expect("valid");
    assert_eq!((close.body, close.keep_alive), (BodyFraming::UntilClose, false));
    assert_eq!(
        resp(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "GET"),
        Err(Error::LengthAndChunked)
    );
}
