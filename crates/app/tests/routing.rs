//! Outbound HTTP routing: Host and path-prefix routes to mesh services, weighted splits, retries
//! of idempotent requests on a dead peer, response timeouts; over HTTP/1.1 and HTTP/2.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_app::Node;

/// A backend that answers every request with `name path`; HTTP/2 when `h2`. A path starting
/// with `/slow` is answered after 2 s.
async fn backend(name: &'static str, h2: bool) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| async move {
                    let path = req.uri().path().to_owned();
                    if path.starts_with("/slow") {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                    }
                    Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from(format!("{name} {path}")))))
                });
                let io = TokioIo::new(s);
                if h2 {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                } else {
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                }
            });
        }
    });
    addr
}

struct Routed {
    _dir: tempfile::TempDir,
    _server: Node,
    client: Node,
}

/// A server node offering services v1 and v2 (protocol http), and a client node whose outbound
/// http listener routes `/v2` (on Host api.example) to v2, `/split` 50/50, `/dead` to a peer
/// that is not there (2 retries), and everything else to v1.
async fn routed(h2: bool) -> Routed {
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, TD).unwrap();
    let opts = Opts::new("off");
    let (v1, v2) = (backend("v1", h2).await, backend("v2", h2).await);
    let client_id = id("client");
    let server_cfg = format!(
        "{}[inbound]\nlisten = \"127.0.0.1:0\"\n\
         [[inbound.services]]\nname = \"v1\"\nbackend = \"{v1}\"\nallow = [\"{client_id}\"]\nprotocol = \"http\"\n\
         [[inbound.services]]\nname = \"v2\"\nbackend = \"{v2}\"\nallow = [\"{client_id}\"]\nprotocol = \"http\"\n",
        node_config(&ca_dir, "server", &opts)
    );
    let server = Node::start(weir_config::parse(&server_cfg, "server.toml").unwrap()).await.unwrap();
    let peer = server.inbound_addr().unwrap();
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let server_id = id("server");
    let client_cfg = format!(
        "{}[[outbound]]\nlisten = \"127.0.0.1:0\"\nservice = \"v1\"\npeer = \"{peer}\"\npeer_id = \"{server_id}\"\n\
         protocol = \"http\"\n[outbound.http]\nresponse_timeout_ms = 5000\n\
         [[outbound.http.routes]]\nhost = \"api.example\"\npath_prefix = \"/v2\"\nsplit = [{{ service = \"v2\" }}]\n\
         [[outbound.http.routes]]\npath_prefix = \"/split\"\nsplit = [{{ service = \"v1\", weight = 1 }}, {{ service = \"v2\", weight = 1 }}]\n\
         [[outbound.http.routes]]\npath_prefix = \"/dead\"\nretries = 2\nconnect_timeout_ms = 500\nsplit = [{{ service = \"gone\" }}]\n\
         [[outbound.http.routes]]\npath_prefix = \"/slow\"\nresponse_timeout_ms = 300\nsplit = [{{ service = \"v2\" }}]\n\
         [[outbound]]\nservice = \"v2\"\npeer = \"{peer}\"\npeer_id = \"{server_id}\"\n\
         [[outbound]]\nservice = \"gone\"\npeer = \"{dead}\"\npeer_id = \"{server_id}\"\n",
        node_config(&ca_dir, "client", &opts)
    );
    let client = Node::start(weir_config::parse(&client_cfg, "client.toml").unwrap()).await.unwrap();
    Routed { _dir: dir, _server: server, client }
}

/// One HTTP/1.1 request on `s`; returns (status, body).
async fn get(s: &mut TcpStream, host: &str, path: &str) -> (u16, String) {
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut chunk)).await.unwrap().unwrap();
        assert!(n > 0, "connection closed early: {:?}", String::from_utf8_lossy(&buf));
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase().strip_prefix("content-length: ").map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if body.len() >= len {
                let status = head[9..12].parse().unwrap();
                return (status, body[..len].to_owned());
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http1_requests_are_routed_by_host_and_prefix_split_by_weight_and_retried_only_when_safe() {
    let r = routed(false).await;
    let addr = r.client.outbound_addrs()[0];
    let mut s = TcpStream::connect(addr).await.unwrap();
    // One app connection, requests to different services: each goes where its route says.
    assert_eq!(get(&mut s, "api.example", "/v2/users").await, (200, "v2 /v2/users".into()));
    assert_eq!(get(&mut s, "other.example", "/v2/users").await, (200, "v1 /v2/users".into()), "host must match");
    assert_eq!(get(&mut s, "api.example:8080", "/v20").await, (200, "v1 /v20".into()), "segment-aware prefix");
    assert_eq!(get(&mut s, "a", "/").await, (200, "v1 /".into()));
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..60 {
        let (status, body) = get(&mut s, "a", "/split").await;
        assert_eq!(status, 200);
        *seen.entry(body).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "a 50/50 split reaches both services: {seen:?}");
    assert!(seen.values().all(|&n| n >= 10), "roughly even: {seen:?}");

    // A dead peer: a GET is tried 1 + 2 times, then 503; the app connection is then closed.
    let refused = |text: &str| metric(text, "weir_connections_refused_total", &["reason=\"peer_unreachable\""]);
    let before = refused(&r.client.metrics_text());
    assert_eq!(get(&mut s, "a", "/dead").await.0, 503);
    assert_eq!(refused(&r.client.metrics_text()) - before, 3.0, "one attempt and two retries");

    // A POST with a body is never retried.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"POST /dead HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi").await.unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert_eq!(refused(&r.client.metrics_text()) - before, 4.0, "no retry for a request with a body");

    // The route's response timeout: 504.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(get(&mut s, "a", "/slow").await.0, 504);
    assert!(started.elapsed() < Duration::from_millis(1500), "the route's 300 ms, not the default");

    let text = r.client.metrics_text();
    assert!(metric(&text, "weir_http_requests_total", &["direction=\"Outbound\"", "service=\"v2\""]) >= 2.0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_streams_are_routed_like_http1_requests() {
    let r = routed(true).await;
    let s = TcpStream::connect(r.client.outbound_addrs()[0]).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake::<_, Full<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut ask = async |uri: &str| {
        let resp = sender.send_request(Request::get(uri).body(Full::new(Bytes::new())).unwrap()).await.unwrap();
        let status = resp.status().as_u16();
        (status, String::from_utf8_lossy(&resp.into_body().collect().await.unwrap().to_bytes()).into_owned())
    };
    assert_eq!(ask("http://api.example/v2/x").await, (200, "v2 /v2/x".into()));
    assert_eq!(ask("http://other.example/v2/x").await, (200, "v1 /v2/x".into()));
    assert_eq!(ask("http://a/dead").await.0, 503);
    assert_eq!(ask("http://a/slow").await.0, 504);
    let text = r.client.metrics_text();
    assert_eq!(metric(&text, "weir_http_requests_total", &["direction=\"Outbound\"", "mode=\"copy\""]), 4.0, "{text}");
}
