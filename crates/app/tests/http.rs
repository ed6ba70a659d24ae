//! HTTP/1.1 on an inbound service with `protocol = "http"` (host kernel, userspace TLS):
//! client app -> client node (L4) -> server node (L7 head-only path) -> a real HTTP/1.1 backend
//! (hyper). The app side writes raw bytes so that framing is exactly what each case says.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use sha2::{Digest, Sha256};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

const MIB: u64 = 1 << 20;
/// Longest wait for any single read: a hang fails the test instead of stalling the suite.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// The backend: hyper's HTTP/1.1 server, recording every request it sees.

/// One request as the backend saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The request-target (origin-form: path and query).
    target: String,
    /// Field names lower-case, in order.
    headers: Vec<(String, String)>,
    body_len: u64,
    body_sha: Vec<u8>,
    trailers: Vec<(String, String)>,
    /// The body ended as framed (not cut by an error).
    complete: bool,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }
}

/// A real HTTP/1.1 server. Routes: `/bytes/N` (N pattern bytes, Content-Length), `/chunked/N`
/// (N pattern bytes, chunked), `/echo` (the request body back), `/upgrade` (101, then echoes raw
/// bytes), anything else `ok\n`. Pattern bytes of `/bytes/N` and `/chunked/N` use seed N.
struct HttpBackend {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type RespBody = http_body_util::combinators::BoxBody<Bytes, Infallible>;

impl HttpBackend {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let conns = Arc::new(AtomicUsize::new(0));
        let (s, c) = (seen.clone(), conns.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                c.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| handle(req, s.clone()));
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await;
                });
            }
        });
        Self { addr, seen, conns, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn targets(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.target).collect()
    }
}

async fn handle(
    mut req: hyper::Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> Result<hyper::Response<RespBody>, std::io::Error> {
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let headers = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let path = req.uri().path().to_owned();
    let upgrade = (path == "/upgrade").then(|| hyper::upgrade::on(&mut req));
    let record = |body_len, body_sha, trailers, complete| Seen {
        method,
        target,
        headers,
        body_len,
        body_sha,
        trailers,
        complete,
    };
    if path == "/fail" {
        // hyper closes the connection without a response.
        seen.lock().unwrap().push(record(0, vec![], vec![], false));
        return Err(std::io::Error::other("no answer"));
    }
    if path == "/noread" {
        // A final answer without reading the body (hyper then sends no 100 Continue).
        seen.lock().unwrap().push(record(0, vec![], vec![], false));
        return Ok(hyper::Response::builder()
            .status(413)
            .body(Full::new(Bytes::from_static(b"no\n")).boxed())
            .unwrap());
    }
    let (mut hasher, mut body, mut trailers) = (Sha256::new(), Vec::new(), Vec::new());
    let mut incoming = req.into_body();
    let mut complete = true;
    while let Some(frame) = incoming.frame().await {
        let Ok(frame) = frame else {
            complete = false;
            break;
        };
        match frame.into_data() {
            Ok(data) => {
                hasher.update(&data);
                body.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(t) = frame.into_trailers() {
                    trailers.extend(
                        t.iter()
                            .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned())),
                    );
                }
            }
        }
    }
    let body_len = body.len() as u64;
    seen.lock().unwrap().push(record(body_len, hasher.finalize().to_vec(), trailers, complete));

    let full = |b: Vec<u8>| Full::new(Bytes::from(b)).boxed();
    let response = if let Some(on) = upgrade {
        tokio::spawn(async move {
            let Ok(upgraded) = on.await else { return };
            let io = hyper_util::rt::TokioIo::new(upgraded);
            let (mut r, mut w) = tokio::io::split(io);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        });
        hyper::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(http_body_util::Empty::new().boxed())
    } else if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        hyper::Response::builder().body(full(pattern(n, n).await))
    } else if let Some(n) = path.strip_prefix("/chunked/").and_then(|n| n.parse::<u64>().ok()) {
        // No length known up front: hyper sends it chunked.
        hyper::Response::builder().body(Chunks { data: Bytes::from(pattern(n, n).await), piece: 10_007 }.boxed())
    } else if path == "/echo" {
        hyper::Response::builder().body(full(body))
    } else if let Some(code) = path.strip_prefix("/status/").and_then(|n| n.parse::<u16>().ok()) {
        hyper::Response::builder().status(code).body(http_body_util::Empty::new().boxed())
    } else if let Some(ms) = path.strip_prefix("/sleep/").and_then(|n| n.parse::<u64>().ok()) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        hyper::Response::builder().body(full(b"late\n".to_vec()))
    } else {
        hyper::Response::builder().body(full(b"ok\n".to_vec()))
    };
    Ok(response.expect("response"))
}

/// A body of unknown length, in pieces.
struct Chunks {
    data: Bytes,
    piece: usize,
}

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.data.is_empty() {
            return Poll::Ready(None);
        }
        let n = self.piece.min(self.data.len());
        let piece = self.data.split_to(n);
        Poll::Ready(Some(Ok(Frame::data(piece))))
    }
}

async fn pattern(len: u64, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len as usize);
    write_pattern(&mut v, len, seed).await.expect("pattern");
    v
}

fn sha(b: &[u8]) -> Vec<u8> {
    Sha256::digest(b).to_vec()
}

// ---------------------------------------------------------------------------------------------
// The app side: raw HTTP/1.1 over a TCP connection to the client node's outbound listener.

#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

struct Client {
    r: OwnedReadHalf,
    /// Taken by a test that writes from another task.
    w: Option<OwnedWriteHalf>,
    buf: Vec<u8>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).await.expect("connect to the outbound listener");
        s.set_nodelay(true).expect("nodelay");
        let (r, w) = s.into_split();
        Self { r, w: Some(w), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.w.as_mut().expect("write half").write_all(bytes).await.expect("write request");
    }

    /// Reads more into `buf`; 0 at end of stream.
    async fn fill(&mut self) -> usize {
        let mut chunk = vec![0u8; 64 * 1024];
        let n = tokio::time::timeout(READ_TIMEOUT, self.r.read(&mut chunk))
            .await
            .expect("response bytes within the read timeout")
            .expect("read response");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    async fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert_ne!(self.fill().await, 0, "connection ended {} bytes short", n - self.buf.len());
        }
        self.buf.drain(..n).collect()
    }

    async fn line(&mut self) -> String {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.take(i + 2).await;
                return String::from_utf8(line[..i].to_vec()).expect("ASCII line");
            }
            assert_ne!(
                self.fill().await,
                0,
                "connection ended inside a line: {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        }
    }

    /// A response head: status and fields.
    async fn head(&mut self) -> (u16, Vec<(String, String)>) {
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        assert!(parts.next().is_some_and(|v| v == "HTTP/1.1" || v == "HTTP/1.0"), "status line {status_line:?}");
        let status = parts.next().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("status in {status_line:?}"));
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                return (status, headers);
            }
            let (n, v) = line.split_once(':').unwrap_or_else(|| panic!("field line {line:?}"));
            headers.push((n.to_ascii_lowercase(), v.trim().to_owned()));
        }
    }

    /// The next final response (1xx heads are skipped) to a request with `method`.
    async fn response_to(&mut self, method: &str) -> Resp {
        let (status, headers) = loop {
            let (status, headers) = self.head().await;
            if !(100..200).contains(&status) {
                break (status, headers);
            }
        };
        let get = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let body = if method == "HEAD" || status == 204 || status == 304 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|te| te.eq_ignore_ascii_case("chunked")) {
            let mut body = Vec::new();
            loop {
                let size_line = self.line().await;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16).expect("chunk size");
                if size == 0 {
                    while !self.line().await.is_empty() {}
                    break body;
                }
                body.extend(self.take(size).await);
                assert_eq!(self.take(2).await, b"\r\n", "CRLF after chunk data");
            }
        } else if let Some(len) = get("content-length") {
            self.take(len.parse().expect("content-length")).await
        } else {
            while self.fill().await != 0 {}
            std::mem::take(&mut self.buf)
        };
        Resp { status, headers, body }
    }

    async fn response(&mut self) -> Resp {
        self.response_to("GET").await
    }

    /// The server side closes after this response: nothing more, then end of stream.
    async fn expect_eof(&mut self) {
        let more = self.fill().await;
        assert_eq!((more, self.buf.len()), (0, 0), "unexpected bytes after the last response: {:?}", self.buf);
    }
}

fn get(path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: web\r\n\r\n").into_bytes()
}

/// One request on a fresh connection; returns the response.
async fn once(addr: SocketAddr, request: &[u8]) -> Resp {
    let mut c = Client::connect(addr).await;
    c.send(request).await;
    c.response().await
}

/// One request on a fresh connection that Weir answers itself: `status`, `Connection: close`,
/// then end of stream.
async fn refused(addr: SocketAddr, request: &[u8], status: u16) -> Resp {
    let mut c = Client::connect(addr).await;
    c.send(request).await;
    let r = c.response().await;
    assert_eq!(r.status, status, "{:?}: {}", String::from_utf8_lossy(request), r.text());
    assert_eq!(r.header("connection"), Some("close"), "a local answer closes the connection");
    c.expect_eof().await;
    r
}

// ---------------------------------------------------------------------------------------------
// Meshes.

const HTTP_SERVICE: &str = "protocol = \"http\"\n[inbound.services.http]\n";

/// Everything logged in this test binary (access lines included), also printed for the test
/// harness. Installed before any node starts, so it is the global subscriber.
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: std::sync::OnceLock<Arc<Mutex<Vec<u8>>>> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let filter = format!("{},weir::access=info", std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .with_writer(move || LogSink(sink.clone()))
            .try_init()
            .expect("the http suite's subscriber is the first one");
        buf
    })
    .clone()
}

struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        print!("{}", String::from_utf8_lossy(b));
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The logged lines that contain every string of `all`.
fn log_lines(all: &[&str]) -> Vec<String> {
    let text = String::from_utf8_lossy(&logs().lock().unwrap()).into_owned();
    text.lines().filter(|l| all.iter().all(|w| l.contains(w))).map(str::to_owned).collect()
}

/// A mesh whose `echo` service is HTTP with `http` (TOML after `[inbound.services.http]`),
/// in front of an [`HttpBackend`], admitting `client` and `other`.
async fn http_mesh(http: &str) -> (Mesh, HttpBackend) {
    logs();
    let backend = HttpBackend::start().await;
    let mut opts = Opts::new("off");
    opts.backend = Some(backend.addr);
    opts.allow = vec![id("client"), id("other")];
    opts.service_extra = format!("{HTTP_SERVICE}{http}");
    (Mesh::start(opts).await, backend)
}

/// A second client node, identity `other`, routing to the same server node.
async fn other_client(mesh: &Mesh) -> weir_app::Node {
    let cfg = node_config(&mesh.dir.path().join("ca"), "other", &Opts::new("off"));
    client_node(&cfg, mesh.inbound(), &id("server")).await
}

/// Fetches `/metrics` from a node's admin endpoint over HTTP.
async fn scrape(node: &weir_app::Node) -> String {
    let mut c = Client::connect(node.admin_addr()).await;
    c.send(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "metrics endpoint");
    r.text()
}

// ---------------------------------------------------------------------------------------------
// Tests.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_requests_and_bodies_are_byte_exact() {
    let (mesh, backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;

    // 50 GETs on one connection, Content-Length and chunked responses of assorted sizes.
    let sizes = [0u64, 1, 2, 100, 4095, 4096, 16383, 16384, 16385, 65536, 100_000, 1_000_003];
    for i in 0..50u64 {
        let n = sizes[i as usize % sizes.len()];
        let path = if i % 2 == 0 { format!("/bytes/{n}") } else { format!("/chunked/{n}") };
        c.send(&get(&path)).await;
        let r = c.response().await;
        assert_eq!(r.status, 200, "GET {path}");
        assert_eq!((r.body.len() as u64, sha(&r.body)), (n, pattern_hash(n, n).await), "body of GET {path}");
        if i % 2 == 1 && n > 0 {
            assert_eq!(r.header("transfer-encoding"), Some("chunked"), "{path} came chunked");
        }
    }

    // Large responses both ways of framing.
    for path in ["/bytes/4194304", "/chunked/3145728"] {
        c.send(&get(path)).await;
        let r = c.response().await;
        let n: u64 = path.rsplit('/').next().unwrap().parse().unwrap();
        assert_eq!((r.body.len() as u64, sha(&r.body)), (n, pattern_hash(n, n).await), "body of GET {path}");
    }

    // HEAD: the length is announced, no body follows, the connection stays usable.
    c.send(b"HEAD /bytes/5000 HTTP/1.1\r\nHost: web\r\n\r\n").await;
    let r = c.response_to("HEAD").await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("5000")), "HEAD answer");

    // A 4 MiB Content-Length body.
    let body = pattern(4 * MIB, 42).await;
    c.send(format!("POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).await;
    c.send(&body).await;
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!((r.body.len(), sha(&r.body)), (body.len(), sha(&body)), "4 MiB echoed byte-exact");

    // A chunked body: several chunks, a chunk extension, a trailer; framing sent in pieces.
    let chunks: Vec<Vec<u8>> =
        vec![pattern(5, 1).await, pattern(70_000, 2).await, pattern(1, 3).await, pattern(MIB, 4).await];
    c.send(b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n").await;
    for (k, chunk) in chunks.iter().enumerate() {
        let ext = if k == 1 { ";name=\"v\"" } else { "" };
        let size_line = format!("{:x}{ext}\r\n", chunk.len());
        // The size line split across writes, so it arrives in separate records.
        let (a, b) = size_line.as_bytes().split_at(1);
        c.send(a).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.send(b).await;
        c.send(chunk).await;
        c.send(b"\r").await;
        tokio::time::sleep(Duration::from_millis(5)).await;
        c.send(b"\n").await;
    }
    c.send(b"0\r\nx-checksum: abc\r\n\r\n").await;
    let all: Vec<u8> = chunks.concat();
    let r = c.response().await;
    assert_eq!(r.status, 200);
    assert_eq!((r.body.len(), sha(&r.body)), (all.len(), sha(&all)), "chunked body echoed byte-exact");

    // Pipelining: three requests in one write, three responses in order.
    let mut three = get("/bytes/3001");
    three.extend(get("/chunked/3002"));
    three.extend(get("/bytes/3003"));
    c.send(&three).await;
    for n in [3001u64, 3002, 3003] {
        let r = c.response().await;
        assert_eq!(
            (r.body.len() as u64, sha(&r.body)),
            (n, pattern_hash(n, n).await),
            "pipelined response {n} in order"
        );
    }

    // Pipelined behind bodies: a Content-Length body and a chunked body, each followed by a GET
    // in the same write.
    let mut mixed = b"POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\n\r\nhello".to_vec();
    mixed.extend(get("/bytes/11"));
    mixed.extend_from_slice(
        b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n3;x\r\nabc\r\n0\r\n\r\n",
    );
    mixed.extend(get("/bytes/12"));
    c.send(&mixed).await;
    assert_eq!(c.response().await.body, b"hello");
    assert_eq!(c.response().await.body.len(), 11);
    assert_eq!(c.response().await.body, b"abc");
    assert_eq!(c.response().await.body.len(), 12);

    // What the backend received, byte-exact, all on one upstream connection.
    let seen = backend.seen();
    assert_eq!(seen.len(), 50 + 2 + 1 + 2 + 3 + 4, "every request reached the backend once");
    let post_cl = &seen[53];
    assert_eq!((post_cl.method.as_str(), post_cl.body_len, &post_cl.body_sha), ("POST", 4 * MIB, &sha(&body)));
    let post_chunked = &seen[54];
    assert_eq!(
        (post_chunked.body_len, &post_chunked.body_sha),
        (all.len() as u64, &sha(&all)),
        "chunked at the backend"
    );
    assert_eq!(post_chunked.trailers, vec![("x-checksum".to_owned(), "abc".to_owned())], "trailer forwarded");
    let pipelined: Vec<&str> = seen[55..].iter().map(|s| s.target.as_str()).collect();
    assert_eq!(pipelined, ["/bytes/3001", "/chunked/3002", "/bytes/3003", "/echo", "/bytes/11", "/echo", "/bytes/12"]);
    assert!(seen.iter().all(|s| s.complete), "every body ended as framed");
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1, "one mesh connection, one backend connection");
    drop(c);
    mesh.settle().await;
}

const POLICY: &str = r#"
[[inbound.services.http.rules]]
action = "deny"
path_prefix = "/admin"
[[inbound.services.http.rules]]
action = "deny"
from = ["spiffe://weir.local/ns/test/sa/other"]
methods = ["POST"]
path_prefix = "/items"
[[inbound.services.http.rules]]
action = "deny"
headers = [{ name = "x-debug", value = "1" }]
[[inbound.services.http.rules]]
action = "deny"
headers = [{ name = "X-Forbidden" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_denies_every_spelling_of_a_denied_path() {
    let (mesh, backend) = http_mesh(POLICY).await;
    let addr = mesh.outbound();
    for path in [
        "/admin",
        "/admin/x",
        "//admin",
        "/./admin",
        "/%61dmin",
        "/x/../admin",
        "/admin?x=1",
        "/ADMIN/../admin",
        "/%2e%2e/admin",
        "/x/%2E%2E/admin",
        "/admin/",
    ] {
        let r = refused(addr, &get(path), 403).await;
        assert_eq!(r.text(), "denied by policy\n", "{path}");
    }
    // Absolute-form is judged by its path too.
    refused(addr, b"GET http://web/admin/x HTTP/1.1\r\nHost: web\r\n\r\n", 403).await;
    assert!(backend.seen().is_empty(), "no denied request reached the backend: {:?}", backend.targets());

    // The prefix is segment-aware.
    let r = once(addr, &get("/administrator")).await;
    assert_eq!(r.status, 200, "/administrator is not below /admin");
    // Targets whose meaning depends on the backend's decoding are refused.
    for path in ["/a%2Fb", "/a%5Cb", "/a\\b", "/a%zz"] {
        refused(addr, &get(path), 400).await;
    }
    // Allowed requests reach the backend with the normalized path (query kept).
    let r = once(addr, &get("/x/./y//z/../w?q=1&r=%2F")).await;
    assert_eq!(r.status, 200);
    assert_eq!(backend.targets(), ["/administrator", "/x/y/w?q=1&r=%2F"], "only allowed requests, normalized");
    backend.seen.lock().unwrap().clear();

    // Header rules: exact value, presence (field names case-insensitive).
    refused(addr, b"GET /h HTTP/1.1\r\nHost: web\r\nX-Debug: 1\r\n\r\n", 403).await;
    refused(addr, b"GET /h HTTP/1.1\r\nHost: web\r\nx-forbidden: whatever\r\n\r\n", 403).await;
    let r = once(addr, b"GET /h0 HTTP/1.1\r\nHost: web\r\nX-Debug: 0\r\n\r\n").await;
    assert_eq!(r.status, 200, "x-debug: 0 does not match the value rule");

    // Identity x method: POST /items is denied to `other` only.
    let post = b"POST /items/1 HTTP/1.1\r\nHost: web\r\nContent-Length: 3\r\n\r\nabc";
    let r = once(addr, post).await;
    assert_eq!(r.status, 200, "client may POST /items");
    let other = other_client(&mesh).await;
    let other_addr = other.outbound_addrs()[0];
    refused(other_addr, post, 403).await;
    let r = once(other_addr, &get("/items/1")).await;
    assert_eq!(r.status, 200, "other may GET /items");
    let seen: Vec<(String, String, u64)> =
        backend.seen().into_iter().map(|s| (s.method, s.target, s.body_len)).collect();
    assert_eq!(
        seen,
        [("GET".into(), "/h0".into(), 0), ("POST".into(), "/items/1".into(), 3), ("GET".into(), "/items/1".into(), 0)]
    );

    let s = mesh.server.metrics_text();
    assert_eq!(metric(&s, "weir_http_policy_verdicts_total", &["verdict=\"deny\""]), 15.0, "{s}");
    assert_eq!(metric(&s, "weir_http_policy_verdicts_total", &["verdict=\"bad_target\""]), 4.0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_answer_to_a_large_body_arrives_intact() {
    // The client is still sending a body when the 403 comes back: it must read the 403, not a
    // reset or an empty close (RFC 9112 9.6: close in stages, keep reading for a while).
    let (mesh, backend) = http_mesh(POLICY).await;
    let body = Arc::new(pattern(8 * MIB, 5).await);
    for k in 0..20 {
        let mut c = Client::connect(mesh.outbound()).await;
        c.send(format!("POST /admin HTTP/1.1\r\nHost: web\r\nContent-Length: {}\r\n\r\n", body.len()).as_bytes()).await;
        let mut w = c.w.take().expect("write half");
        let body = body.clone();
        let writer = tokio::spawn(async move {
            // The server stops reading after the head: this write may fail, that is fine.
            let _ = w.write_all(&body).await;
            w
        });
        let resp = c.response().await;
        assert_eq!(resp.status, 403, "attempt {k}: the 403 arrives while the body is still being sent");
        writer.abort();
    }
    assert!(backend.seen().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let (mesh, backend) =
        http_mesh("[[inbound.services.http.rate_limits]]\npath_prefix = \"/limited\"\nper_second = 1\nburst = 3\n")
            .await;
    let addr = mesh.outbound();
    for k in 0..3 {
        let r = once(addr, &get("/limited/a")).await;
        assert_eq!(r.status, 200, "request {k} is within the burst");
    }
    let r = refused(addr, &get("/limited/b"), 429).await;
    let retry: u64 = r.header("retry-after").expect("retry-after").parse().expect("retry-after is seconds");
    assert!(retry >= 1, "retry-after {retry}");
    // Other routes are not limited.
    assert_eq!(once(addr, &get("/free")).await.status, 200);
    assert_eq!(
        backend.targets(),
        ["/limited/a", "/limited/a", "/limited/a", "/free"],
        "the 429 never reached the backend"
    );
    let s = mesh.server.metrics_text();
    assert_eq!(metric(&s, "weir_http_policy_verdicts_total", &["verdict=\"rate_limited\""]), 1.0, "{s}");
}

fn parse_traceparent(v: &str) -> (String, String, String, String) {
    let parts: Vec<&str> = v.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {v:?}");
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    assert!(hex(parts[0], 2) && hex(parts[1], 32) && hex(parts[2], 16) && hex(parts[3], 2), "traceparent {v:?}");
    assert!(parts[1].bytes().any(|b| b != b'0') && parts[2].bytes().any(|b| b != b'0'), "all-zero id in {v:?}");
    (parts[0].to_owned(), parts[1].to_owned(), parts[2].to_owned(), parts[3].to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traceparent_is_continued_or_started() {
    let (mesh, backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    c.send(format!("GET /t1 HTTP/1.1\r\nHost: web\r\ntraceparent: {incoming}\r\n\r\n").as_bytes()).await;
    assert_eq!(c.response().await.status, 200);
    c.send(&get("/t2")).await;
    assert_eq!(c.response().await.status, 200);
    c.send(&get("/t3")).await;
    assert_eq!(c.response().await.status, 200);
    // Invalid (upper-case hex): replaced by a new trace.
    c.send(b"GET /t4 HTTP/1.1\r\nHost: web\r\nTraceparent: 00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01\r\n\r\n").await;
    assert_eq!(c.response().await.status, 200);

    let seen = backend.seen();
    for s in &seen {
        assert_eq!(s.all("traceparent").len(), 1, "exactly one traceparent reaches the backend: {:?}", s.headers);
    }
    let t1 = parse_traceparent(seen[0].header("traceparent").unwrap());
    assert_eq!(t1.0, "00");
    assert_eq!(t1.1, "4bf92f3577b34da6a3ce929d0e0e4736", "trace id continued");
    assert_ne!(t1.2, "00f067aa0ba902b7", "a new parent id for this hop");
    assert_eq!(t1.3, "00", "flags kept");
    let (t2, t3, t4) = (
        parse_traceparent(seen[1].header("traceparent").unwrap()),
        parse_traceparent(seen[2].header("traceparent").unwrap()),
        parse_traceparent(seen[3].header("traceparent").unwrap()),
    );
    assert_eq!(t2.3, "01", "a new trace is sampled");
    assert_ne!(t2.1, t3.1, "each request without a parent starts its own trace");
    assert_ne!(t4.1, "4bf92f3577b34da6a3ce929d0e0e4736", "an invalid parent is not continued");
    assert_ne!(t4.1.to_ascii_lowercase(), "4bf92f3577b34da6a3ce929d0e0e4736");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_and_reach_nothing() {
    let (mesh, backend) = http_mesh("max_head_bytes = 4096\nmax_headers = 10\n").await;
    let addr = mesh.outbound();
    let big = format!("GET / HTTP/1.1\r\nHost: web\r\nX-Big: {}\r\n\r\n", "a".repeat(6000));
    let many: String = (0..12).map(|k| format!("X-H{k}: v\r\n")).collect();
    let many = format!("GET / HTTP/1.1\r\nHost: web\r\n{many}\r\n");
    let cases: [(&[u8], u16); 13] = [
        (b"POST /m HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /m HTTP/1.1\r\nHost: web\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcdef", 400),
        (b"POST /m HTTP/1.1\r\nHost: web\r\nContent-Length: 5, 6\r\n\r\nabcdef", 400),
        (b"POST /m HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: gzip\r\n\r\nabc", 400),
        (big.as_bytes(), 431),
        (b"GET /m HTTP/1.1\r\nHost: web\r\nX-Fold: a\r\n b\r\n\r\n", 400),
        (b"GET /m HTTP/1.1\r\nHost : web\r\n\r\n", 400),
        (many.as_bytes(), 431),
        (b"GET /m HTTP/2.0\r\nHost: web\r\n\r\n", 505),
        (b"POST /m HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"POST /m HTTP/1.1\r\nHost: web\r\nContent-Length: -1\r\n\r\n", 400),
        (b"POST /m HTTP/1.0\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400),
        (b"GET /m HTTP/1.1\r\nHost: web\r\nX-Bad: a\x00b\r\n\r\n", 400),
    ];
    for (request, status) in cases {
        refused(addr, request, status).await;
    }
    assert!(backend.seen().is_empty(), "no malformed request reached the backend: {:?}", backend.targets());
    // The service still works.
    assert_eq!(once(addr, &get("/fine")).await.status, 200);
    mesh.settle().await;
    let s = mesh.server.metrics_text();
    assert_eq!(metric(&s, "weir_http_requests_total", &["result=\"bad_request\""]), 13.0, "{s}");
    assert_eq!(metric(&s, "weir_http_requests_total", &["result=\"ok\""]), 1.0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_verdicts_and_userspace_body_bytes() {
    let (mesh, backend) = http_mesh(&format!(
        "{POLICY}[[inbound.services.http.rate_limits]]\npath_prefix = \"/limited\"\nper_second = 1\nburst = 1\n"
    ))
    .await;
    let addr = mesh.outbound();
    let mut c = Client::connect(addr).await;
    let mut body_bytes = 0u64;
    for n in [1000u64, 20_000, 300_000] {
        c.send(&get(&format!("/bytes/{n}"))).await;
        assert_eq!(c.response().await.body.len() as u64, n);
        c.send(&get(&format!("/chunked/{n}"))).await;
        assert_eq!(c.response().await.body.len() as u64, n);
        body_bytes += 2 * n;
    }
    let upload = pattern(123_457, 9).await;
    c.send(format!("POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: {}\r\n\r\n", upload.len()).as_bytes()).await;
    c.send(&upload).await;
    assert_eq!(c.response().await.body, upload);
    body_bytes += 2 * upload.len() as u64;
    drop(c);
    refused(addr, &get("/admin"), 403).await;
    assert_eq!(once(addr, &get("/limited")).await.status, 200);
    body_bytes += 3;
    refused(addr, &get("/limited"), 429).await;
    mesh.settle().await;
    assert_eq!(backend.seen().len(), 8);

    let s = scrape(&mesh.server).await;
    let svc = "service=\"echo\"";
    let ok = ["direction=\"Inbound\"", svc, "status_class=\"2xx\"", "mode=\"userspace\"", "result=\"ok\""];
    assert_eq!(metric(&s, "weir_http_requests_total", &ok), 8.0, "{s}");
    assert_eq!(metric(&s, "weir_http_requests_total", &[svc, "method=\"GET\"", "status_class=\"2xx\""]), 7.0, "{s}");
    assert_eq!(metric(&s, "weir_http_requests_total", &[svc, "method=\"POST\"", "status_class=\"2xx\""]), 1.0, "{s}");
    let local = [svc, "status_class=\"4xx\"", "result=\"local\""];
    assert_eq!(metric(&s, "weir_http_requests_total", &local), 2.0, "{s}");
    assert_eq!(metric(&s, "weir_http_policy_verdicts_total", &[svc, "verdict=\"allow\""]), 8.0, "{s}");
    assert_eq!(metric(&s, "weir_http_policy_verdicts_total", &[svc, "verdict=\"deny\""]), 1.0, "{s}");
    assert_eq!(metric(&s, "weir_http_policy_verdicts_total", &[svc, "verdict=\"rate_limited\""]), 1.0, "{s}");
    assert_eq!(metric(&s, "weir_http_request_duration_seconds_count", &[svc]), 10.0, "{s}");
    assert_eq!(
        metric(&s, "weir_http_userspace_body_bytes_total", &[svc, "mode=\"userspace\""]),
        body_bytes as f64,
        "userspace TLS on the peer leg: every body byte crosses userspace\n{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_mode_is_labelled_copy() {
    let (mesh, _backend) = http_mesh("mode = \"copy\"\n").await;
    let r = once(mesh.outbound(), &get("/bytes/77777")).await;
    assert_eq!((r.body.len(), sha(&r.body)), (77_777, pattern_hash(77_777, 77_777).await));
    mesh.settle().await;
    let s = scrape(&mesh.server).await;
    assert_eq!(metric(&s, "weir_http_requests_total", &["mode=\"copy\"", "status_class=\"2xx\""]), 1.0, "{s}");
    assert_eq!(metric(&s, "weir_http_requests_total", &["mode=\"userspace\""]), 0.0, "{s}");
    assert_eq!(metric(&s, "weir_http_userspace_body_bytes_total", &["mode=\"copy\""]), 77_777.0, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_switches_to_raw_bytes_both_ways() {
    let (mesh, backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    c.send(b"GET /upgrade HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await;
    let (status, headers) = c.head().await;
    assert_eq!(status, 101, "{headers:?}");
    assert!(headers.iter().any(|(n, v)| n == "upgrade" && v == "echo"), "{headers:?}");
    assert!(c.buf.is_empty(), "nothing after the 101 head yet");
    let len = 3 * MIB + 17;
    let mut w = c.w.take().expect("write half");
    let writer = tokio::spawn(async move {
        // Bytes that look like HTTP must pass untouched too.
        w.write_all(b"GET /not-a-request HTTP/1.1\r\n\r\n").await.expect("write");
        let h = write_pattern(&mut w, len, 77).await.expect("write upgraded");
        w.shutdown().await.expect("half-close");
        h
    });
    while c.fill().await != 0 {}
    let got = std::mem::take(&mut c.buf);
    let sent = writer.await.expect("writer");
    let prefix = b"GET /not-a-request HTTP/1.1\r\n\r\n";
    assert_eq!(&got[..prefix.len()], prefix);
    assert_eq!((got.len() as u64 - prefix.len() as u64, sha(&got[prefix.len()..])), (len, sent), "raw echo byte-exact");
    assert_eq!(backend.targets(), ["/upgrade"], "one HTTP request; the rest was opaque");
    mesh.settle().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_gets_100_then_the_final_response() {
    let (mesh, backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    let body = pattern(200_000, 11).await;
    c.send(
        format!("POST /echo HTTP/1.1\r\nHost: web\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", body.len())
            .as_bytes(),
    )
    .await;
    // Nothing is sent before the 100.
    let (status, _) = c.head().await;
    assert_eq!(status, 100, "interim 100 Continue before the body is sent");
    c.send(&body).await;
    let r = c.response().await;
    assert_eq!((r.status, r.body.len(), sha(&r.body)), (200, body.len(), sha(&body)));
    // The connection is still good for another request.
    c.send(&get("/bytes/10")).await;
    assert_eq!(c.response().await.body.len(), 10);
    let seen = backend.seen();
    assert_eq!((seen[0].body_len, &seen[0].body_sha), (body.len() as u64, &sha(&body)));
    assert_eq!(seen.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_variants() {
    let (mesh, backend) = http_mesh(POLICY).await;
    let addr = mesh.outbound();
    let body = pattern(50_000, 12).await;
    let head = |path: &str| {
        format!("POST {path} HTTP/1.1\r\nHost: web\r\nContent-Length: {}\r\nExpect: 100-continue\r\n\r\n", body.len())
    };

    // A client that does not wait for the 100 (curl after its 1 s) still gets 100, then 200.
    let mut c = Client::connect(addr).await;
    c.send(head("/echo").as_bytes()).await;
    c.send(&body).await;
    assert_eq!(c.head().await.0, 100);
    let r = c.response().await;
    assert_eq!((r.status, sha(&r.body)), (200, sha(&body)));

    // The backend answers without reading the body: no 100, its answer, then the connection
    // ends (the unsent body cannot be framed).
    let mut c = Client::connect(addr).await;
    c.send(head("/noread").as_bytes()).await;
    let r = c.response().await;
    assert_eq!((r.status, r.text().as_str()), (413, "no\n"));
    c.expect_eof().await;

    // Denied: 403 straight away, no 100 (the head is enough to refuse).
    let mut c = Client::connect(addr).await;
    c.send(head("/admin").as_bytes()).await;
    let (status, _) = c.head().await;
    assert_eq!(status, 403, "no 100 Continue for a denied request");

    assert_eq!(backend.targets(), ["/echo", "/noread"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_and_close_delimited_responses() {
    let (mesh, backend) = http_mesh("").await;
    let addr = mesh.outbound();
    // HTTP/1.0 cannot be chunked: hyper ends the body by closing, Weir relays to the end.
    let mut c = Client::connect(addr).await;
    c.send(b"GET /chunked/70001 HTTP/1.0\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!(r.header("content-length"), None, "close-delimited");
    assert_eq!((r.status, r.body.len(), sha(&r.body)), (200, 70_001, pattern_hash(70_001, 70_001).await));
    // HTTP/1.0 keep-alive with known lengths.
    let mut c = Client::connect(addr).await;
    for n in [100u64, 200] {
        c.send(format!("GET /bytes/{n} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").as_bytes()).await;
        let r = c.response().await;
        assert_eq!((r.status, r.body.len() as u64), (200, n));
    }
    // HTTP/1.1 with Connection: close: the response, then the end.
    let mut c = Client::connect(addr).await;
    c.send(b"GET /bytes/300 HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n").await;
    assert_eq!(c.response().await.body.len(), 300);
    c.expect_eof().await;
    assert_eq!(backend.seen().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodiless_responses_and_a_declined_upgrade_keep_the_connection() {
    let (mesh, backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    for (path, status) in [("/status/204", 204), ("/status/304", 304), ("/bytes/10", 200)] {
        c.send(&get(path)).await;
        let r = c.response().await;
        assert_eq!(r.status, status, "{path}");
    }
    // Upgrade asked, not granted: an ordinary exchange, and the connection stays HTTP.
    c.send(b"GET /bytes/20 HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n").await;
    let r = c.response().await;
    assert_eq!((r.status, r.body.len()), (200, 20));
    c.send(&get("/bytes/30")).await;
    assert_eq!(c.response().await.body.len(), 30);
    assert_eq!(backend.seen().len(), 5);
    assert_eq!(backend.conns.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_failures_are_answered_502_and_504() {
    let (mesh, _backend) = http_mesh("response_timeout_ms = 300\n").await;
    let addr = mesh.outbound();
    let r = refused(addr, &get("/sleep/2000"), 504).await;
    assert!(r.text().contains("upstream"), "{}", r.text());
    refused(addr, &get("/fail"), 502).await;
    assert_eq!(once(addr, &get("/sleep/10")).await.status, 200, "a prompt answer is relayed");
    mesh.settle().await;
    let s = mesh.server.metrics_text();
    assert_eq!(
        metric(&s, "weir_http_requests_total", &["result=\"upstream_error\"", "status_class=\"5xx\""]),
        2.0,
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_gets_408_and_an_idle_keep_alive_connection_closes() {
    let (mesh, backend) = http_mesh("request_head_timeout_ms = 300\n").await;
    let addr = mesh.outbound();
    let started = std::time::Instant::now();
    let r = refused(addr, b"GET /slow HTTP/1.1\r\nHost: w", 408).await;
    assert!(r.text().contains("timeout"), "{}", r.text());
    // Idle after a request: closed without a word.
    let mut c = Client::connect(addr).await;
    c.send(&get("/bytes/5")).await;
    assert_eq!(c.response().await.body.len(), 5);
    c.expect_eof().await;
    assert!(started.elapsed() < Duration::from_secs(5), "the timeouts fired: {:?}", started.elapsed());
    assert_eq!(backend.targets(), ["/bytes/5"]);
    drop(c);
    mesh.settle().await;
    let c = mesh.client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_closed_total", &["outcome=\"closed\""]), 2.0, "clean closes:\n{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_idle_from_the_start_closes_cleanly() {
    let (mesh, _backend) = http_mesh("request_head_timeout_ms = 300\n").await;
    let mut c = Client::connect(mesh.outbound()).await;
    c.expect_eof().await;
    drop(c);
    mesh.settle().await;
    let c = mesh.client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_closed_total", &["outcome=\"closed\""]), 1.0, "a clean close:\n{c}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_request_gets_the_response() {
    let (mesh, _backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    c.send(&get("/bytes/70000")).await;
    c.w.take().expect("write half").shutdown().await.expect("half-close");
    let r = c.response().await;
    assert_eq!((r.body.len(), sha(&r.body)), (70_000, pattern_hash(70_000, 70_000).await));
    c.expect_eof().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_carries_bytes_sent_right_after_the_request_head() {
    let (mesh, _backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    c.send(b"GET /upgrade HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nEARLY-BYTES").await;
    assert_eq!(c.head().await.0, 101);
    c.send(b"-LATER").await;
    c.w.take().expect("write half").shutdown().await.expect("half-close");
    while c.fill().await != 0 {}
    assert_eq!(String::from_utf8_lossy(&c.buf), "EARLY-BYTES-LATER");
}

const HOST_POLICY: &str = r#"
[[inbound.services.http.rules]]
action = "deny"
headers = [{ name = "host", value = "admin.internal" }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_rule_judges_the_host_the_backend_gets() {
    let (mesh, backend) = http_mesh(HOST_POLICY).await;
    let addr = mesh.outbound();
    refused(addr, b"GET /x HTTP/1.1\r\nHost: admin.internal\r\n\r\n", 403).await;
    // Absolute-form: its authority is the host (RFC 9112 3.2.2) and goes upstream as Host.
    let mut c = Client::connect(addr).await;
    c.send(b"GET http://admin.internal/x HTTP/1.1\r\nHost: public\r\n\r\n").await;
    let r = c.response().await;
    let hosts: Vec<String> = backend.seen().iter().map(|s| s.all("host").join(",")).collect();
    assert!(
        r.status == 403 || hosts.iter().all(|h| h != "admin.internal"),
        "the policy allowed Host \"public\" but the backend got {hosts:?} (status {})",
        r.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_gets_one_access_log_line() {
    let (mesh, _backend) = http_mesh(POLICY).await;
    let addr = mesh.outbound();
    let mut c = Client::connect(addr).await;
    let trace = "0af7651916cd43dd8448eb211c80319c";
    c.send(
        format!("GET /logged-7d1e?q=1 HTTP/1.1\r\nHost: web\r\ntraceparent: 00-{trace}-b7ad6b7169203331-01\r\n\r\n")
            .as_bytes(),
    )
    .await;
    assert_eq!(c.response().await.status, 200);
    drop(c);
    refused(addr, &get("/admin/logged-7d1e"), 403).await;
    mesh.settle().await;
    let ok = log_lines(&["weir::access", "/logged-7d1e"]);
    let ok: Vec<&String> = ok.iter().filter(|l| !l.contains("/admin")).collect();
    assert_eq!(ok.len(), 1, "one line for the allowed request: {ok:?}");
    let trace_field = format!("trace_id=\"{trace}\"");
    for want in [
        "status=200",
        "verdict=\"allow\"",
        "method=\"GET\"",
        "path=\"/logged-7d1e\"",
        &trace_field,
        "source=spiffe://weir.local/ns/test/sa/client",
        "service=\"echo\"",
        "direction=Inbound",
    ] {
        assert!(ok[0].contains(want), "{want:?} missing from {}", ok[0]);
    }
    assert!(!ok[0].contains("q=1"), "the query string stays out of the log: {}", ok[0]);
    let denied = log_lines(&["weir::access", "/admin/logged-7d1e"]);
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert!(denied[0].contains("status=403") && denied[0].contains("verdict=\"deny\""), "{}", denied[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_in_many_small_pieces_is_assembled() {
    let (mesh, backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    let request = b"GET /bytes/9?piece=1 HTTP/1.1\r\nHost: web\r\nX-Long: abcdefghij\r\n\r\n";
    for piece in request.chunks(3) {
        c.send(piece).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(c.response().await.body.len(), 9);
    let seen = backend.seen();
    assert_eq!((seen[0].target.as_str(), seen[0].header("x-long")), ("/bytes/9?piece=1", Some("abcdefghij")));
}

/// Sends a chunked POST whose body is `body` on a fresh connection; returns all it gets back
/// before the connection ends (by close or reset).
async fn post_chunked_raw(addr: SocketAddr, body: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n").await.expect("head");
    s.write_all(body).await.expect("body");
    let mut got = Vec::new();
    let _ = tokio::time::timeout(READ_TIMEOUT, s.read_to_end(&mut got)).await.expect("the connection ends");
    String::from_utf8_lossy(&got).into_owned()
}

const BAD_CHUNKS: [&[u8]; 4] = [
    b"5\nhello\r\n0\r\n\r\n",
    b"5\r\nhelloXX0\r\n\r\n",
    b"zz\r\nhello\r\n0\r\n\r\n",
    b"5;a=\x01\r\nhello\r\n0\r\n\r\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_never_completes_a_request_at_the_backend() {
    let (mesh, backend) = http_mesh("").await;
    for body in BAD_CHUNKS {
        let got = post_chunked_raw(mesh.outbound(), body).await;
        assert!(
            !got.contains(" 200 "),
            "{:?}: the backend's answer was relayed: {got:?}",
            String::from_utf8_lossy(body)
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let seen = backend.seen();
    assert_eq!(seen.len(), BAD_CHUNKS.len(), "the heads went up before the bodies: {seen:?}");
    assert!(seen.iter().all(|s| !s.complete), "no bad body completed a request: {seen:?}");
    assert!(seen.iter().all(|s| s.body_len <= 5), "nothing after the bad framing reached the backend: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_chunk_is_the_clients_fault() {
    let (mesh, _backend) = http_mesh("").await;
    for body in BAD_CHUNKS {
        let got = post_chunked_raw(mesh.outbound(), body).await;
        assert!(
            got.is_empty() || got.starts_with("HTTP/1.1 400 "),
            "{:?}: a client error, not the backend's: {got:?}",
            String::from_utf8_lossy(body)
        );
    }
    mesh.settle().await;
    let s = mesh.server.metrics_text();
    assert_eq!(metric(&s, "weir_http_requests_total", &["result=\"upstream_error\""]), 0.0, "{s}");
}

/// Fetches an admin path's body from a node.
async fn admin_get(node: &weir_app::Node, path: &str) -> String {
    let mut c = Client::connect(node.admin_addr()).await;
    c.send(format!("GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").as_bytes()).await;
    let r = c.response().await;
    assert_eq!(r.status, 200, "{path}");
    r.text()
}

/// The value of `field=` in a text log line (quotes trimmed).
fn field<'l>(line: &'l str, name: &str) -> &'l str {
    let key = format!(" {name}=");
    let at = line.find(&key).unwrap_or_else(|| panic!("no {name} in {line}")) + key.len();
    let rest = &line[at..];
    match rest.strip_prefix('"') {
        Some(quoted) => &quoted[..quoted.find('"').expect("closing quote")],
        None => rest.split(' ').next().expect("value"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_joins_its_connection_record_log_lines_and_counters() {
    let (mesh, _backend) = http_mesh("").await;
    let mut c = Client::connect(mesh.outbound()).await;
    c.send(&get("/bytes/54321?join=1")).await;
    assert_eq!(c.response().await.body.len(), 54_321);

    // While open: the server node's record of the mesh connection.
    let records: serde_json::Value =
        serde_json::from_str(&admin_get(&mesh.server, "/connections").await).expect("json");
    let records = records.as_array().expect("array");
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    let conn = r["id"].as_u64().expect("id");
    assert_eq!(r["direction"], "inbound");
    assert_eq!(r["peer"], id("client").to_string());
    assert_eq!(r["service"], "echo");
    assert_eq!(r["mode"], "userspace");
    assert_eq!(r["tls_version"], "TLSv1_3");
    assert!(r["cipher"].as_str().is_some_and(|c| c.starts_with("TLS13_")), "{r}");
    assert_eq!(r["requests"], 1);
    assert_eq!(r["local"].as_str(), Some(mesh.inbound().to_string().as_str()));
    assert!(r["bytes_to_peer"].as_u64() > Some(54_321), "the response went to the peer node: {r}");
    let remote = r["remote"].as_str().expect("remote").to_owned();
    drop(c);
    mesh.settle().await;

    // The request's access line names the same connection, identities and mode.
    let request = log_lines(&["weir::access", "/bytes/54321", "direction=Inbound"]);
    assert_eq!(request.len(), 1, "{request:?}");
    assert_eq!(field(&request[0], "mesh_conn"), conn.to_string());
    assert_eq!(field(&request[0], "source"), id("client").to_string());
    assert_eq!(field(&request[0], "destination"), id("server").to_string());
    assert_eq!(field(&request[0], "mode"), "userspace");
    assert!(field(&request[0], "srtt_us").parse::<u32>().expect("srtt") > 0, "{}", request[0]);

    // Its connection's closing line: the whole record, counted as Prometheus counts it.
    let closing = log_lines(&["weir::access", "connection closed", &format!("remote={remote}")]);
    assert_eq!(closing.len(), 1, "{closing:?}");
    let line = &closing[0];
    assert_eq!(field(line, "conn"), conn.to_string());
    assert_eq!(field(line, "peer"), id("client").to_string());
    assert_eq!((field(line, "mode"), field(line, "requests")), ("userspace", "1"));
    let (sent, received) =
        (field(line, "sent").parse::<f64>().unwrap(), field(line, "received").parse::<f64>().unwrap());
    assert!(sent > 54_321.0 && received > 0.0, "{line}");
    let s = scrape(&mesh.server).await;
    let inbound = ["direction=\"Inbound\"", "mode=\"userspace\""];
    assert_eq!(metric(&s, "weir_bytes_total", &[inbound[0], inbound[1], "flow=\"ToPeer\""]), sent, "{s}");
    assert_eq!(metric(&s, "weir_bytes_total", &[inbound[0], inbound[1], "flow=\"FromPeer\""]), received, "{s}");
    assert_eq!(metric(&s, "weir_connections_closed_total", &inbound), 1.0, "{s}");
    assert!(field(line, "srtt_us").parse::<u32>().unwrap() > 0, "TCP_INFO read at close: {line}");
    assert_eq!(admin_get(&mesh.server, "/connections").await.trim(), "[]", "closed connections leave the table");
}
