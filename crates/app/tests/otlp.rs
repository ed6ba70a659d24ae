//! Request spans at a real OTLP/gRPC receiver (the collector's own protobuf service, decoded
//! with opentelemetry-proto), traffic unharmed when the collector is down, and TCP
//! retransmits under induced loss showing in spans, records and metrics alike.
#![allow(missing_docs, clippy::unwrap_used)]

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An OTLP/gRPC trace receiver keeping every span it is sent.
#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = request.into_inner().resource_spans.into_iter().flat_map(|r| r.scope_spans).flat_map(|s| s.spans);
        self.0.lock().unwrap().extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

impl Receiver {
    async fn start() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = hyper_util::service::TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        (receiver, addr)
    }

    /// Waits for spans whose `url.path` is `path`.
    async fn spans_for(&self, path: &str, n: usize) -> Vec<Span> {
        for _ in 0..100 {
            let got: Vec<Span> =
                self.0.lock().unwrap().iter().filter(|s| text_attr(s, "url.path") == Some(path)).cloned().collect();
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("fewer than {n} spans for {path} arrived: {:?}", self.0.lock().unwrap());
    }
}

fn attr<'s>(span: &'s Span, key: &str) -> Option<&'s Value> {
    span.attributes.iter().find(|kv| kv.key == key)?.value.as_ref()?.value.as_ref()
}

fn text_attr<'s>(span: &'s Span, key: &str) -> Option<&'s str> {
    match attr(span, key)? {
        Value::StringValue(s) => Some(s),
        _ => None,
    }
}

fn int_attr(span: &Span, key: &str) -> Option<i64> {
    match attr(span, key)? {
        Value::IntValue(v) => Some(*v),
        _ => None,
    }
}

/// A minimal HTTP/1.1 backend: `GET /bytes/N` answers N bytes, keep-alive.
async fn backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    let Ok(n) = s.read(&mut buf).await else { return };
                    if n == 0 {
                        return;
                    }
                    head.extend_from_slice(&buf[..n]);
                    while let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                        let line = String::from_utf8_lossy(&head[..end]).into_owned();
                        head.drain(..end + 4);
                        let len: usize = line
                            .split(' ')
                            .nth(1)
                            .and_then(|p| p.strip_prefix("/bytes/"))
                            .map_or(2, |n| n.split('?').next().unwrap().parse().unwrap());
                        let response = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n");
                        if s.write_all(response.as_bytes()).await.is_err()
                            || s.write_all(&vec![b'x'; len]).await.is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    addr
}

/// A mesh whose `echo` service is HTTP; the server node exports spans to `otlp`.
async fn mesh(otlp: SocketAddr) -> Mesh {
    let mut opts = Opts::new("off");
    opts.backend = Some(backend().await);
    opts.service_extra = format!(
        "protocol = \"http\"\n[inbound.services.http]\n[telemetry]\notlp_endpoint = \"http://{otlp}\"\ntcp_sample_interval_ms = 200\n"
    );
    Mesh::start(opts).await
}

/// Sends `GET path` `n` times on one keep-alive connection through the mesh, each with its own
/// traceparent; returns the trace ids.
async fn requests(addr: SocketAddr, path: &str, n: usize, len: usize) -> Vec<String> {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let mut traces = Vec::new();
    for i in 0..n {
        let trace = format!("{:032x}", 0x5eed_0000_u128 + i as u128 + (len as u128) * 1000);
        traces.push(trace.clone());
        let req = format!("GET {path} HTTP/1.1\r\nHost: web\r\ntraceparent: 00-{trace}-00f067aa0ba902b7-01\r\n\r\n");
        c.write_all(req.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            head.push(c.read_u8().await.unwrap());
        }
        assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).await.unwrap();
    }
    traces
}

async fn scrape(node: &weir_app::Node) -> String {
    let mut c = TcpStream::connect(node.admin_addr()).await.unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n").await.unwrap();
    let mut text = String::new();
    c.read_to_string(&mut text).await.unwrap();
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_spans_reach_the_collector_with_their_connections_l4_facts() {
    let (receiver, addr) = Receiver::start().await;
    let mesh = mesh(addr).await;
    let traces = requests(mesh.outbound(), "/bytes/1000", 3, 1000).await;
    let spans = receiver.spans_for("/bytes/1000", 3).await;
    assert_eq!(spans.len(), 3, "one span per request");
    for (span, trace) in spans.iter().zip(&traces) {
        assert_eq!(hex(&span.trace_id), *trace, "the span continues the request's trace");
        assert_eq!(hex(&span.parent_span_id), "00f067aa0ba902b7");
        assert_eq!(text_attr(span, "http.request.method"), Some("GET"));
        assert_eq!(int_attr(span, "http.response.status_code"), Some(200));
        assert_eq!(text_attr(span, "weir.source"), Some(id("client").to_string().as_str()));
        assert_eq!(text_attr(span, "weir.mode"), Some("userspace"));
        assert!(int_attr(span, "weir.conn_id").is_some_and(|c| c > 0));
        assert!(int_attr(span, "weir.tcp.srtt_us").is_some_and(|rtt| rtt > 0), "{span:?}");
        assert!(int_attr(span, "weir.tcp.retransmits").is_some());
        assert!(span.end_time_unix_nano >= span.start_time_unix_nano && span.start_time_unix_nano > 0);
    }
    // The receiver has the spans a moment before the exporter hears back and counts them.
    let mut s = String::new();
    for _ in 0..100 {
        s = scrape(&mesh.server).await;
        if metric(&s, "weir_otlp_spans_total", &["result=\"exported\""]) >= 3.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("3 exported spans not counted: {s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_flows_when_the_collector_is_down_and_dropped_spans_are_counted() {
    // A port with nothing behind it.
    let gone = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mesh = mesh(gone).await;
    let started = std::time::Instant::now();
    requests(mesh.outbound(), "/bytes/10", 20, 10).await;
    assert!(started.elapsed() < Duration::from_secs(5), "requests never wait on the exporter");
    let mut dropped = 0.0;
    for _ in 0..100 {
        dropped = metric(&scrape(&mesh.server).await, "weir_otlp_spans_total", &["result=\"dropped_export_failed\""]);
        if dropped >= 20.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dropped, 20.0, "every span of the 20 requests is counted as dropped");
}

/// An nftables table dropping a share of the packets from one loopback port (the server
/// node's inbound listener: its responses to the client node) as they arrive, removed on drop.
/// The input hook, not output: a packet dropped on output is reported back to its sender's
/// TCP, which sends it again without counting a retransmit.
struct Loss(String);

impl Loss {
    fn from_port(port: u16, per_mille: u32) -> Self {
        let table = format!("weir_loss_{port}");
        let rules = format!(
            "table inet {table} {{\n chain inp {{\n type filter hook input priority 0;\n tcp sport {port} numgen random mod 1000 < {per_mille} counter drop\n }}\n}}\n"
        );
        let status =
            std::process::Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().and_then(
                |mut c| {
                    use std::io::Write;
                    c.stdin.take().unwrap().write_all(rules.as_bytes())?;
                    c.wait()
                },
            );
        assert!(
            status.is_ok_and(|s| s.success()),
            "nft could not add the loss rule (the suite runs as root with nftables installed)"
        );
        Self(table)
    }
}

impl Drop for Loss {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "inet", &self.0]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_loss_spans_records_and_metrics_show_retransmits() {
    let (receiver, addr) = Receiver::start().await;
    let mesh = mesh(addr).await;
    let loss = Loss::from_port(mesh.inbound().port(), 30);
    let len = 1 << 20;
    let path = format!("/bytes/{len}");
    requests(mesh.outbound(), &path, 20, len).await;
    drop(loss);
    let spans = receiver.spans_for(&path, 20).await;
    let most = spans.iter().filter_map(|s| int_attr(s, "weir.tcp.retransmits")).max().unwrap_or(0);
    assert!(most > 0, "a request span carries its connection's retransmits");
    mesh.settle().await;
    let s = scrape(&mesh.server).await;
    let retransmits = metric(&s, "weir_tcp_retransmits_total", &["direction=\"Inbound\""]);
    assert!(retransmits >= most as f64, "the connection's metrics count them too ({retransmits} < {most})\n{s}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
