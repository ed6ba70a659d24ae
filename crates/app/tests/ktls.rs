//! The mesh hop in kernel TLS: both ends `ktls_sw`, bytes moved by splice. Runs in a guest
//! kernel with CONFIG_TLS (`make test-ktls`, tests/vm/run-in-uml.sh); on a kernel without kTLS
//! every test fails with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::cases;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_identity::{IdentitySource, Validity};
use weir_tls::ktls::{self, CorkStream, Support};
use weir_tls::preamble::{Request, Status, REQUEST_HEADER_LEN};

const MIB: u64 = 1 << 20;

async fn require_ktls() -> Vec<rustls::SupportedCipherSuite> {
    match ktls::detect().await {
        Support::Available(suites) => suites,
        Support::Unavailable(reason) => {
            panic!("this suite needs a kernel with kTLS (run it with `make test-ktls`): {reason}")
        }
    }
}

fn tls_stat() -> BTreeMap<String, i64> {
    std::fs::read_to_string("/proc/net/tls_stat")
        .expect("/proc/net/tls_stat exists where kTLS is loaded")
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            Some((it.next()?.to_owned(), it.next()?.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_exact_in_ktls_sw_and_kernel_counters_rise() {
    require_ktls().await;
    let before = tls_stat();
    cases::byte_exact("auto", "ktls_sw", &[0, 1, 16383, 16385, MIB, 64 * MIB]).await;
    let after = tls_stat();
    for key in ["TlsTxSw", "TlsRxSw"] {
        let delta = after[key] - before.get(key).copied().unwrap_or(0);
        assert!(delta >= 12, "{key} rose by {delta}: 6 connections x 2 kTLS sockets (one per node) expected");
    }
    assert_eq!(after.get("TlsDecryptError"), before.get("TlsDecryptError"), "no decrypt errors");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_notify_carries_half_close_backend_first() {
    require_ktls().await;
    cases::half_close_backend_first("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_propagates_over_ktls() {
    require_ktls().await;
    cases::backend_reset_propagates("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ktls_connections() {
    require_ktls().await;
    cases::concurrent("auto", 32, 256 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_on_the_inter_node_leg_in_ktls_mode() {
    require_ktls().await;
    cases::plaintext_never_on_the_wire("auto", "ktls_sw").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_byte_limit_ends_the_session_with_a_reset() {
    require_ktls().await;
    let mut opts = Opts::new("auto");
    opts.max_session_bytes = MIB;
    let mesh = Mesh::start(opts).await;
    let s = TcpStream::connect(mesh.outbound()).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move { write_pattern(&mut w, 8 * MIB, 3).await });
    let got = read_hash(&mut r).await;
    let wrote = writer.await.expect("writer task");
    // The kernel reports a reset once per socket: whichever of the app's calls runs first (the
    // read or the write) gets the error, the other may then see a closed socket.
    assert!(
        got.is_err() || wrote.is_err(),
        "the app must see the session end as an error, not a clean end: read {got:?}, write {wrote:?}"
    );
    assert!(got.as_ref().map_or(true, |(n, _)| *n < 8 * MIB), "the transfer must not look complete: {got:?}");
    mesh.settle().await;
    let c = mesh.client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_closed_total", &["outcome=\"session_limit\""]), 1.0, "{c}");
}

/// A peer whose server sends TLS 1.3 session tickets: they arrive before the preamble answer,
/// are consumed in userspace, and the kTLS socket carries application data only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_tickets_before_the_switch_are_drained() {
    let suites = require_ktls().await;
    let mesh = Mesh::start(Opts::new("auto")).await;
    let svid = std::sync::Arc::new(
        mesh.ca.issue(&id("server"), Validity::starting_now(Duration::from_secs(600))).expect("svid"),
    );
    let cfgs = weir_tls::TlsConfigs::new(svid, &mesh.ca.trust_bundle().expect("bundle"), Some(&suites), true)
        .expect("configs");
    let mut server_cfg = (*cfgs.server()).clone();
    server_cfg.send_tls13_tickets = 2;
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(server_cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer_addr = listener.local_addr().expect("addr");
    let backend = mesh.backend.addr;
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        ktls::prepare(&sock).expect("ULP");
        let mut tls = acceptor.accept(CorkStream::new(sock)).await.expect("handshake");
        let mut header = [0u8; REQUEST_HEADER_LEN];
        tls.read_exact(&mut header).await.expect("preamble");
        let mut body = vec![0u8; Request::decode_header(&header).expect("header")];
        tls.read_exact(&mut body).await.expect("preamble body");
        Request::decode_body(&body).expect("request");
        tls.write_all(&Status::Ok.encode()).await.expect("answer");
        tls.flush().await.expect("flush");
        let switched = ktls::switch_server(tls).await.expect("switch");
        let b = TcpStream::connect(backend).await.expect("backend");
        weir_forward::splice_ktls(b, switched.socket, switched.drained, &Default::default(), Default::default()).await
    });
    let mut opts = Opts::new("auto");
    opts.expected_server = id("server");
    let client =
        client_node(&node_config(&mesh.dir.path().join("ca"), "client", &opts), peer_addr, &id("server")).await;
    echo_exact(client.outbound_addrs()[0], 4 * MIB, 21).await;
    let outcome = server.await.expect("server task");
    assert_eq!(outcome.as_label(), "closed", "ticket-sending peer closed cleanly: {outcome:?}");
    let c = client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_opened_total", &["mode=\"ktls_sw\""]), 1.0, "{c}");
}

/// An HTTP backend: answers `/bytes/N` with N pattern bytes, and reports the SHA-256 and length
/// of any request body in `x-body`.
async fn http_backend() -> std::net::SocketAddr {
    use sha2::{Digest, Sha256};
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.expect("accept");
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    use http_body_util::BodyExt;
                    let n: usize = req.uri().path().strip_prefix("/bytes/").and_then(|n| n.parse().ok()).unwrap_or(0);
                    let body = req.into_body().collect().await.expect("body").to_bytes();
                    let out: Vec<u8> = (0..n).map(|i| (i % 253) as u8).collect();
                    let mut resp = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(out)));
                    let tag = format!("{}-{:x}", body.len(), Sha256::digest(&body));
                    resp.headers_mut().insert("x-body", tag.parse().expect("header"));
                    Ok::<_, std::convert::Infallible>(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(s), service)
                    .await;
            });
        }
    });
    addr
}

/// HTTP/1.1 over kTLS on both nodes: large Content-Length and chunked bodies both ways, byte
/// exact, and not one body byte through userspace on the HTTP node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_bodies_over_ktls_never_cross_userspace() {
    use sha2::{Digest, Sha256};
    require_ktls().await;
    let mut opts = Opts::new("auto");
    opts.backend = Some(http_backend().await);
    opts.service_extra = "protocol = \"http\"\n".into();
    let mesh = Mesh::start(opts).await;
    let mut s = TcpStream::connect(mesh.outbound()).await.expect("connect");
    let upload: Vec<u8> = (0..8 * MIB as usize).map(|i| (i % 241) as u8).collect();
    let want = format!("{}-{:x}", upload.len(), Sha256::digest(&upload));
    // Content-Length up, 16 MiB down.
    let head = format!("POST /bytes/{} HTTP/1.1\r\nHost: echo\r\nContent-Length: {}\r\n\r\n", 16 * MIB, upload.len());
    let (mut r, mut w) = s.split();
    let send = async {
        w.write_all(head.as_bytes()).await.expect("head");
        w.write_all(&upload).await.expect("body");
    };
    let (_, (tag, body)) = tokio::join!(send, read_response_split(&mut r));
    assert_eq!(tag, want, "backend got the upload byte for byte");
    assert_eq!(body.len() as u64, 16 * MIB);
    assert!(body.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8), "download byte-exact");
    // Chunked up on the same connection.
    let mut chunked = b"POST /bytes/5 HTTP/1.1\r\nHost: echo\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in upload.chunks(3 * MIB as usize) {
        chunked.extend_from_slice(format!("{:x};x=y\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let send = async { w.write_all(&chunked).await.expect("chunked") };
    let (_, (tag, body)) = tokio::join!(send, read_response_split(&mut r));
    assert_eq!(tag, want);
    assert_eq!(body, b"\x00\x01\x02\x03\x04");
    // The open connection's record: kTLS mode, the negotiated session, a TCP_INFO sample. The
    // server node counts a request once its response body has been spliced, which can be just
    // after the client read the last byte, so the count is awaited (bounded), not sampled once.
    let mut records = mesh.server.connections();
    for _ in 0..200 {
        if records.len() == 1 && records[0].requests == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        records = mesh.server.connections();
    }
    assert_eq!(records.len(), 1, "{records:?}");
    let r = &records[0];
    assert_eq!((r.mode.as_str(), r.tls_version.as_str(), r.requests), ("ktls_sw", "TLSv1_3", 2), "{r:?}");
    assert!(r.bytes_to_peer > 16 * MIB && r.bytes_from_peer > 16 * MIB, "{r:?}");
    drop(s);
    mesh.settle().await;
    let text = mesh.server.metrics_text();
    // Host-wide kernel TLS counters are exported as the kernel counts them.
    assert!(metric(&text, "weir_kernel_tls_stat", &["stat=\"TlsTxSw\""]) >= 2.0, "{text}");
    assert_eq!(metric(&text, "weir_http_requests_total", &["mode=\"ktls_sw\"", "status_class=\"2xx\""]), 2.0, "{text}");
    assert_eq!(metric(&text, "weir_http_userspace_body_bytes_total", &["mode=\"ktls_sw\""]), 0.0, "{text}");
    assert_eq!(metric(&text, "weir_connections_opened_total", &["mode=\"ktls_sw\""]), 1.0, "{text}");
}

async fn read_response_split(r: &mut tokio::net::tcp::ReadHalf<'_>) -> (String, Vec<u8>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let (head_len, len, tag) = loop {
        let n = r.read(&mut chunk).await.expect("read");
        assert!(n > 0, "closed early");
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 200"), "{head}");
            let field = |name: &str| head.lines().find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()));
            break (end + 4, field("content-length:").expect("length").parse::<usize>().expect("n"), field("x-body:"));
        }
    };
    while buf.len() < head_len + len {
        let n = r.read(&mut chunk).await.expect("read");
        assert!(n > 0, "body cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
    (tag.unwrap_or_default(), buf[head_len..head_len + len].to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dpu_roles_wire_leg_runs_in_ktls_sw() {
    use common::dpu::{dpu, free_addr, sealed, through, KEY};
    require_ktls().await;
    let mut opts = Opts::new("auto");
    opts.allow = vec![id("cart")];
    let mesh = Mesh::start(opts).await;
    let dpu = dpu(&mesh, &mesh.dir.path().join("ca"), &Opts::new("auto"), (free_addr(), free_addr())).await;
    let before = tls_stat();
    let got = through(&dpu, &sealed(&KEY, "cart"), 8 * MIB).await;
    assert_eq!(got, (Some(weir_tls::preamble::Status::Ok), true), "byte-exact as workload cart");
    let m = dpu.node.metrics_text();
    let wire =
        metric(&m, "weir_connections_opened_total", &["mode=\"ktls_sw\"", &format!("peer=\"{}\"", id("server"))]);
    assert_eq!(wire, 1.0, "the DPU's wire leg in kernel TLS:\n{m}");
    assert!(tls_stat()["TlsTxSw"] > before.get("TlsTxSw").copied().unwrap_or(0), "the kernel encrypted");
}
