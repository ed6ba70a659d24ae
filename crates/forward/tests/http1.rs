//! The HTTP/1.1 pump over real loopback sockets: framing forwarded byte for byte, bodies kept
//! out of userspace when both legs splice, and every way an exchange can end.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_forward::http1::{self, End, Exchange, ExchangeResult, Hooks, Http1Limits, Leg, Verdict};
use weir_forward::{Side, Tally};
use weir_http::RequestHead;

#[derive(Default)]
struct Seen {
    targets: Vec<String>,
    exchanges: Vec<Exchange>,
}

struct TestHooks(Arc<Mutex<Seen>>);

impl Hooks for TestHooks {
    fn request(&mut self, head: &RequestHead) -> Verdict {
        self.0.lock().unwrap().targets.push(head.target.clone());
        if head.target == "/deny" {
            return Verdict::Answer(403, weir_http::local_response(403, &[], "denied"));
        }
        Verdict::Forward(weir_http::encode_request(head, &head.target, &[]))
    }

    fn done(&mut self, _head: Option<&RequestHead>, exchange: Exchange) {
        self.0.lock().unwrap().exchanges.push(exchange);
    }
}

struct Harness {
    client: TcpStream,
    backend: TcpStream,
    seen: Arc<Mutex<Seen>>,
    tally: Tally,
    proxy: tokio::task::JoinHandle<Result<End, String>>,
}

async fn pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
    let (b, _) = l.accept().await.unwrap();
    (a, b)
}

/// client <-> [down | pump | up] <-> backend, with the pump in splice or copy mode.
async fn harness(copy: bool) -> Harness {
    let (client, down) = pair().await;
    let (up, backend) = pair().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let tally = Tally::default();
    let (hooks_seen, t) = (seen.clone(), tally.clone());
    let proxy = tokio::spawn(async move {
        let limits = Http1Limits {
            head: weir_http::Limits { max_head_bytes: 4096, max_headers: 50 },
            request_head: Duration::from_secs(1),
            response_head: Duration::from_secs(5),
        };
        let mut d = Leg::socket(&down, None, copy);
        let mut u = Leg::socket(&up, None, copy);
        let mut hooks = TestHooks(hooks_seen);
        http1::serve(&mut d, &mut u, (Side::Peer, Side::Local), &mut hooks, &limits, &t)
            .await
            .map_err(|o| o.as_label().to_owned())
    });
    Harness { client, backend, seen, tally, proxy }
}

async fn read_exactly(s: &mut TcpStream, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut buf)).await.expect("in time").expect("read");
    buf
}

async fn read_to_end(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await.expect("in time").expect("read");
    buf
}

fn body(n: usize, seed: u8) -> Vec<u8> {
    (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
}

fn with_body(head: &str, body: &[u8]) -> Vec<u8> {
    let mut v = head.as_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[tokio::test]
async fn length_delimited_bodies_are_spliced_byte_exact_and_never_cross_userspace() {
    let mut h = harness(false).await;
    for round in 0..2u8 {
        let req_body = body(1 << 20, round);
        let req = with_body(
            &format!("POST /up/{round} HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\n\r\n", req_body.len()),
            &req_body,
        );
        let resp_body = body(3 << 20, round + 7);
        let resp = with_body(&format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", resp_body.len()), &resp_body);
        let (mut c, mut b) = (h.client, h.backend);
        let r = req.clone();
        let writer = tokio::spawn(async move {
            c.write_all(&r).await.unwrap();
            c
        });
        assert_eq!(read_exactly(&mut b, req.len()).await, req, "backend got the request byte for byte");
        let mut c = writer.await.unwrap();
        let resp_writer = tokio::spawn(async move {
            b.write_all(&resp).await.unwrap();
            (b, resp)
        });
        let got = read_exactly(&mut c, resp_body.len() + 40).await;
        let (b, resp) = resp_writer.await.unwrap();
        assert_eq!(got[..], resp[..got.len()]);
        let rest = read_exactly(&mut c, resp.len() - got.len()).await;
        assert_eq!(rest[..], resp[got.len()..]);
        (h.client, h.backend) = (c, b);
    }
    drop(h.client);
    assert_eq!(h.proxy.await.unwrap(), Ok(End::Closed));
    let seen = h.seen.lock().unwrap();
    assert_eq!(seen.exchanges.len(), 2);
    for ex in &seen.exchanges {
        assert_eq!((ex.status, ex.request_body, ex.response_body), (200, 1 << 20, 3 << 20));
        assert_eq!(ex.result, ExchangeResult::Ok);
        assert_eq!(ex.userspace_body, 0, "splice on both legs: no body byte in userspace");
    }
    assert_eq!(h.tally.userspace_body.get(), 0);
    assert!(h.tally.userspace.get() < 400, "only heads crossed userspace: {}", h.tally.userspace.get());
}

#[tokio::test]
async fn chunked_bodies_keep_their_framing_and_only_size_lines_cross_userspace() {
    let mut h = harness(false).await;
    let big = body(100_000, 3);
    let mut req = b"POST /chunks HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    req.extend_from_slice(b"5;ext=1\r\nhello\r\n");
    req.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n0\r\nX-Trailer: yes\r\n\r\n");
    // Split the write so the decoder meets partial size lines.
    let (a, rest) = req.split_at(40);
    h.client.write_all(a).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (mut c, mut b) = (h.client, h.backend);
    let rest = rest.to_vec();
    let writer = tokio::spawn(async move {
        c.write_all(&rest).await.unwrap();
        c
    });
    assert_eq!(read_exactly(&mut b, req.len()).await, req);
    let mut c = writer.await.unwrap();
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n".to_vec();
    b.write_all(&resp).await.unwrap();
    assert_eq!(read_exactly(&mut c, resp.len()).await, resp);
    drop(c);
    assert_eq!(h.proxy.await.unwrap(), Ok(End::Closed));
    let seen = h.seen.lock().unwrap();
    assert_eq!((seen.exchanges[0].request_body, seen.exchanges[0].response_body), (5 + big.len() as u64, 3));
    assert_eq!(seen.exchanges[0].userspace_body, 0);
}

#[tokio::test]
async fn copy_mode_moves_the_same_bytes_through_userspace_and_says_so() {
    let mut h = harness(true).await;
    let req_body = body(70_000, 1);
    let req = with_body(&format!("PUT /x HTTP/1.1\r\nContent-Length: {}\r\n\r\n", req_body.len()), &req_body);
    let (mut c, mut b) = (h.client, h.backend);
    let r = req.clone();
    let writer = tokio::spawn(async move {
        c.write_all(&r).await.unwrap();
        c
    });
    assert_eq!(read_exactly(&mut b, req.len()).await, req);
    h.client = writer.await.unwrap();
    let resp = b"HTTP/1.1 201 Created\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndone".to_vec();
    b.write_all(&resp).await.unwrap();
    assert_eq!(read_to_end(&mut h.client).await, resp, "Connection: close ends the connection after the response");
    assert_eq!(h.proxy.await.unwrap(), Ok(End::Closed));
    let seen = h.seen.lock().unwrap();
    assert_eq!(seen.exchanges[0].userspace_body, 70_004, "copy mode: every body byte, both ways");
    assert_eq!(h.tally.userspace_body.get(), 70_004);
}

#[tokio::test]
async fn bodiless_responses_pipelining_and_close_delimited_bodies() {
    let mut h = harness(false).await;
    // Three requests in one write: HEAD, a 204 and a 304 must not wait for bodies.
    let reqs = b"HEAD /a HTTP/1.1\r\n\r\nDELETE /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n";
    h.client.write_all(reqs).await.unwrap();
    let answers: [&[u8]; 3] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    ];
    let heads = [&b"HEAD /a HTTP/1.1\r\n\r\n"[..], b"DELETE /b HTTP/1.1\r\n\r\n", b"GET /c HTTP/1.1\r\n\r\n"];
    for (head, answer) in heads.iter().zip(answers) {
        assert_eq!(read_exactly(&mut h.backend, head.len()).await, head.to_vec(), "one request at a time, in order");
        h.backend.write_all(answer).await.unwrap();
        assert_eq!(read_exactly(&mut h.client, answer.len()).await, answer.to_vec());
    }
    assert_eq!(read_exactly(&mut h.backend, 19).await, b"GET /d HTTP/1.1\r\n\r\n".to_vec());
    // No length: the body runs until the backend closes.
    h.backend.write_all(b"HTTP/1.0 200 OK\r\n\r\nuntil close").await.unwrap();
    drop(h.backend);
    assert_eq!(read_to_end(&mut h.client).await, b"HTTP/1.0 200 OK\r\n\r\nuntil close".to_vec());
    assert_eq!(h.proxy.await.unwrap(), Ok(End::Closed));
    let seen = h.seen.lock().unwrap();
    let statuses: Vec<u16> = seen.exchanges.iter().map(|e| e.status).collect();
    assert_eq!(statuses, [200, 204, 304, 200]);
    assert_eq!(seen.exchanges[3].response_body, 11);
}

#[tokio::test]
async fn expect_continue_waits_for_the_backend_before_the_body() {
    let mut h = harness(false).await;
    let head = b"POST /e HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n";
    h.client.write_all(head).await.unwrap();
    assert_eq!(read_exactly(&mut h.backend, head.len()).await, head.to_vec());
    h.backend.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut h.client, 25).await, b"HTTP/1.1 100 Continue\r\n\r\n".to_vec());
    h.client.write_all(b"body").await.unwrap();
    assert_eq!(read_exactly(&mut h.backend, 4).await, b"body".to_vec());
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    h.backend.write_all(resp).await.unwrap();
    assert_eq!(read_exactly(&mut h.client, resp.len()).await, resp.to_vec());
    drop(h.client);
    assert_eq!(h.proxy.await.unwrap(), Ok(End::Closed));
}

#[tokio::test]
async fn malformed_requests_get_their_status_and_never_reach_the_backend() {
    let cases: [(&[u8], &str); 5] = [
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", "400"),
        (b"GET / HTTP/1.1\r\nX-A: a\r\n folded\r\n\r\n", "400"),
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", "400"),
        (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "400"),
    ];
    for (bytes, status) in cases {
        let mut h = harness(false).await;
        h.client.write_all(bytes).await.unwrap();
        let answer = String::from_utf8(read_to_end(&mut h.client).await).unwrap();
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status} ")),
            "{:?} -> {answer:?}",
            String::from_utf8_lossy(bytes)
        );
        assert!(read_to_end(&mut h.backend).await.is_empty(), "nothing reached the backend");
        assert_eq!(h.proxy.await.unwrap(), Ok(End::Closed));
        assert_eq!(h.seen.lock().unwrap().exchanges[0].result, ExchangeResult::BadRequest);
    }
    let mut h = harness(false).await;
    let huge = format!("GET / HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(5000));
    h.client.write_all(huge.as_bytes()).await.unwrap();
    let answer = String::from_utf8(read_to_end(&mut h.client).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
}

#[tokio::test]
async fn a_local_answer_closes_without_touching_the_backend() {
    let mut h = harness(false).await;
    h.client.write_all(b"GET /deny HTTP/1.1\r\n\r\nGET /next HTTP/1.1\r\n\r\n").await.unwrap();
    let answer = String::from_utf8(read_to_end(&mut h.client).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403 ") && answer.ends_with("denied\n"), "{answer}");
    assert!(read_to_end(&mut h.backend).await.is_empty());
    assert_eq!(h.proxy.await.unwrap(), Ok(End::Closed));
    assert_eq!(h.seen.lock().unwrap().targets, ["/deny"], "the pipelined request after it was not served");
}

#[tokio::test]
async fn an_accepted_upgrade_hands_the_connection_back_as_opaque_bytes() {
    let mut h = harness(false).await;
    let req = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
    h.client.write_all(req).await.unwrap();
    assert_eq!(read_exactly(&mut h.backend, req.len()).await, req.to_vec());
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n";
    h.backend.write_all(resp).await.unwrap();
    assert_eq!(read_exactly(&mut h.client, resp.len()).await, resp.to_vec());
    assert_eq!(h.proxy.await.unwrap(), Ok(End::Upgraded));
}

#[tokio::test]
async fn a_backend_that_closes_early_gets_a_502_and_a_cut_body_is_an_error() {
    let mut h = harness(false).await;
    h.client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
    read_exactly(&mut h.backend, 19).await;
    drop(h.backend);
    let answer = String::from_utf8(read_to_end(&mut h.client).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 502 "), "{answer}");
    assert_eq!(h.seen.lock().unwrap().exchanges[0].result, ExchangeResult::UpstreamError);

    let mut h = harness(false).await;
    h.client.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
    read_exactly(&mut h.backend, 19).await;
    h.backend.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort").await.unwrap();
    drop(h.backend);
    assert!(h.proxy.await.unwrap().is_err(), "a truncated body is a failure, not a clean end");
}

#[tokio::test]
async fn a_head_trickling_in_past_the_timeout_gets_408_and_an_idle_connection_just_closes() {
    let mut h = harness(false).await;
    h.client.write_all(b"GET / HT").await.unwrap();
    // The harness allows 1 s for a head.
    let answer = String::from_utf8(read_to_end(&mut h.client).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer}");
    assert_eq!(h.seen.lock().unwrap().exchanges[0].rejected, Some("head_timeout"));

    let mut h = harness(false).await;
    assert!(read_to_end(&mut h.client).await.is_empty(), "idle: closed without a word");
    assert!(h.seen.lock().unwrap().exchanges.is_empty());
}

#[tokio::test]
async fn a_malformed_chunk_in_the_request_is_the_clients_error_and_gets_400() {
    let mut h = harness(false).await;
    let head = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    h.client.write_all(head).await.unwrap();
    h.client.write_all(b"zz\r\nhello\r\n0\r\n\r\n").await.unwrap();
    let answer = String::from_utf8(read_to_end(&mut h.client).await).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert_eq!(read_to_end(&mut h.backend).await, head.to_vec(), "only the head went up, no chunk after it");
    let seen = h.seen.lock().unwrap();
    assert_eq!(seen.exchanges[0].result, ExchangeResult::BadRequest);
    assert_eq!(seen.exchanges[0].rejected, Some("bad_chunk"));
}
