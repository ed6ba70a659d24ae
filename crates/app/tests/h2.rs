//! HTTP/2 (h2c by preface) through two nodes to an HTTP/2 backend: copy mode with the same
//! policy, trace propagation and telemetry as HTTP/1.1, trailers (what gRPC needs) intact.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use tokio::net::{TcpListener, TcpStream};

/// An h2c backend: answers with what it saw (method, path, traceparent, body length and hash)
/// and a `grpc-status` trailer.
async fn h2_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let seen = format!(
                        "{} {} traceparent={}",
                        req.method(),
                        req.uri().path_and_query().map_or("", |p| p.as_str()),
                        req.headers().get("traceparent").map_or("", |v| v.to_str().unwrap_or("?"))
                    );
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let text = format!("{seen} len={} sha={:x}", body.len(), Sha256::digest(&body));
                    let mut trailers = hyper::HeaderMap::new();
                    trailers.insert("grpc-status", "0".parse().unwrap());
                    let frames = Frames([Frame::data(Bytes::from(text)), Frame::trailers(trailers)].into());
                    Ok::<_, std::convert::Infallible>(Response::new(frames))
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), service)
                    .await;
            });
        }
    });
    addr
}

/// A body of given frames (data, then trailers), as a gRPC server answers.
struct Frames(std::collections::VecDeque<Frame<Bytes>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(Ok))
    }
}

async fn h2_client(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let s = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut hyper::client::conn::http2::SendRequest<Full<Bytes>>,
    method: &str,
    path: &str,
    body: Vec<u8>,
    traceparent: Option<&str>,
) -> (u16, String, Option<hyper::HeaderMap>) {
    let mut req = Request::builder().method(method).uri(format!("http://echo{path}"));
    if let Some(t) = traceparent {
        req = req.header("traceparent", t);
    }
    let resp = sender.send_request(req.body(Full::new(Bytes::from(body))).unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, String::from_utf8_lossy(&collected.to_bytes()).into_owned(), trailers)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_through_the_mesh_in_copy_mode_with_policy_trailers_and_traces() {
    let backend = h2_backend().await;
    let mut opts = Opts::new("off");
    opts.backend = Some(backend);
    opts.service_extra =
        "protocol = \"http\"\n[[inbound.services.http.rules]]\naction = \"deny\"\npath_prefix = \"/admin\"\n".into();
    let mesh = Mesh::start(opts).await;
    let mut client = h2_client(mesh.outbound()).await;

    let (status, seen, trailers) = send(&mut client, "GET", "/hello?x=1", Vec::new(), None).await;
    assert_eq!(status, 200, "{seen}");
    assert!(seen.starts_with("GET /hello?x=1 traceparent=00-"), "a trace was started: {seen}");
    assert_eq!(trailers.and_then(|t| t.get("grpc-status").cloned()).unwrap(), "0", "trailers pass through");

    let body: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    let (status, seen, _) = send(&mut client, "POST", "/upload", body.clone(), None).await;
    assert_eq!(status, 200);
    assert!(seen.ends_with(&format!("len=1048576 sha={:x}", Sha256::digest(&body))), "{seen}");

    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let (_, seen, _) = send(&mut client, "GET", "/t", Vec::new(), Some(parent)).await;
    assert!(seen.contains("traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-"), "trace continued: {seen}");
    assert!(!seen.contains("00f067aa0ba902b7"), "with this hop's own span id: {seen}");

    for path in ["/admin", "/admin/x", "//admin", "/%61dmin"] {
        let (status, body, _) = send(&mut client, "GET", path, Vec::new(), None).await;
        assert_eq!(status, 403, "{path}: {body}");
    }
    // Streams are multiplexed: many at once on one connection.
    let mut tasks = Vec::new();
    for n in 0..20 {
        let mut c = client.clone();
        tasks.push(tokio::spawn(async move { send(&mut c, "GET", &format!("/m/{n}"), Vec::new(), None).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }

    let text = mesh.server.metrics_text();
    let ok = metric(&text, "weir_http_requests_total", &["mode=\"copy\"", "status_class=\"2xx\""]);
    assert_eq!(ok, 23.0, "{text}");
    assert_eq!(metric(&text, "weir_http_requests_total", &["mode=\"copy\"", "status_class=\"4xx\""]), 4.0);
    assert_eq!(metric(&text, "weir_http_policy_verdicts_total", &["verdict=\"deny\""]), 4.0);
    let copied = metric(&text, "weir_http_userspace_body_bytes_total", &["mode=\"copy\""]);
    assert!(copied >= 1_048_576.0, "copy mode counts the bodies it moved: {copied}");
}
