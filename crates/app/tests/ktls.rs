//! The mesh hop in kernel TLS: both ends `ktls_sw`, bytes moved by splice. Runs in a guest
//! kernel with CONFIG_TLS (`make test-ktls`, tests/vm/run-in-vm.sh, on Debian's 6.1 and on a
//! 7.2 that rekeys); on a kernel without kTLS every test fails with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::cases;
use common::*;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_identity::{IdentitySource, Validity};
use weir_tls::ktls::{self, Kernel, Support};
use weir_tls::preamble::{Request, Status, REQUEST_HEADER_LEN};

const MIB: u64 = 1 << 20;

async fn require_ktls() -> Kernel {
    match ktls::detect().await {
        Support::Available(kernel) => kernel,
        Support::Unavailable(reason) => {
            panic!("this suite needs a kernel with kTLS (run it with `make test-ktls`): {reason}")
        }
    }
}

/// Whether this guest kernel rekeys kTLS, as the runner says (`WEIR_GUEST_KERNEL`, set by
/// scripts/test.sh: 7.2 can, 6.1 cannot); the start-up probe must agree.
fn kernel_rekeys(kernel: &Kernel) -> bool {
    let expected = match std::env::var("WEIR_GUEST_KERNEL").as_deref() {
        Ok("6.1") => false,
        Ok("7.2") => true,
        other => {
            panic!("WEIR_GUEST_KERNEL must name the guest kernel, 6.1 or 7.2 (scripts/test.sh sets it): {other:?}")
        }
    };
    assert_eq!(kernel.rekey.is_supported(), expected, "the rekey probe on this kernel: {:?}", kernel.rekey);
    expected
}

/// How much each `/proc/net/tls_stat` counter rose since `before`.
fn tls_stat_delta(before: &BTreeMap<String, i64>) -> BTreeMap<String, i64> {
    tls_stat().into_iter().map(|(k, v)| (k.clone(), v - before.get(&k).copied().unwrap_or(0))).collect()
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

/// Each node seals at most 64 records under one key: a kernel that rekeys sends a KeyUpdate and
/// goes on (16 MiB echoed byte-exact, many rekeys each way, no decrypt error); one that cannot
/// ends the session with a reset before the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_limit_rekeys_or_ends_the_session() {
    let kernel = require_ktls().await;
    let rekeys = kernel_rekeys(&kernel);
    let mut opts = Opts::new("auto");
    opts.records_per_key = 64;
    let mesh = Mesh::start(opts).await;
    if rekeys {
        let before = tls_stat();
        echo_exact(mesh.outbound(), 16 * MIB, 5).await;
        mesh.settle().await;
        let delta = tls_stat_delta(&before);
        eprintln!("own rekeys at 64 records per key, 16 MiB each way: tls_stat deltas {delta:?}");
        // 16 MiB is at least 1024 records each way: a rekey every 64-80 of them, on both nodes.
        assert!(delta["TlsTxRekeyOk"] >= 24, "{delta:?}");
        assert!(delta["TlsRxRekeyOk"] >= 24, "{delta:?}");
        assert_eq!(delta["TlsDecryptError"], 0, "{delta:?}");
        let c = mesh.client.metrics_text();
        assert_eq!(metric(&c, "weir_connections_closed_total", &["outcome=\"closed\""]), 1.0, "{c}");
        return;
    }
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
    let kernel = require_ktls().await;
    let mesh = Mesh::start(Opts::new("auto")).await;
    let mut server_cfg = (*server_configs(&mesh, &kernel).server()).clone();
    server_cfg.send_tls13_tickets = 2;
    let server_cfg = std::sync::Arc::new(server_cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer_addr = listener.local_addr().expect("addr");
    let backend = mesh.backend.addr;
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        ktls::prepare(&sock).expect("ULP");
        let mut tls = ktls::accept(server_cfg, sock).await.expect("handshake");
        answer_preamble(&mut tls).await;
        let s = tls.switch(&kernel).await.expect("switch");
        let b = TcpStream::connect(backend).await.expect("backend");
        weir_forward::splice_ktls(b, s.socket, &s.keys, s.drained, &Default::default(), Default::default()).await
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

/// The server node's TLS configurations, issued by the mesh's CA, restricted to the kernel's suites.
fn server_configs(mesh: &Mesh, kernel: &Kernel) -> weir_tls::TlsConfigs {
    let svid = std::sync::Arc::new(
        mesh.ca.issue(&id("server"), Validity::starting_now(Duration::from_secs(600))).expect("svid"),
    );
    weir_tls::TlsConfigs::new(svid, &mesh.ca.trust_bundle().expect("bundle"), Some(&kernel.suites), true)
        .expect("configs")
}

/// Reads the client node's preamble and admits it.
async fn answer_preamble<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(tls: &mut S) {
    let mut header = [0u8; REQUEST_HEADER_LEN];
    tls.read_exact(&mut header).await.expect("preamble");
    let mut body = vec![0u8; Request::decode_header(&header).expect("header")];
    tls.read_exact(&mut body).await.expect("preamble body");
    Request::decode_body(&body).expect("request");
    tls.write_all(&Status::Ok.encode()).await.expect("answer");
    tls.flush().await.expect("flush");
}

/// A peer in userspace rustls that refreshes its keys (asking for ours too) every MiB while it
/// echoes a transfer through the client node's kTLS splice. On a kernel that rekeys the client
/// node follows every KeyUpdate both ways and the echo is byte-exact; on one that cannot, the
/// first KeyUpdate ends the connection with an error, never with wrong bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_key_updates_are_followed_or_close_the_connection() {
    init_logs();
    let kernel = require_ktls().await;
    let rekeys = kernel_rekeys(&kernel);
    let mesh = Mesh::start(Opts::new("auto")).await;
    let acceptor = tokio_rustls::TlsAcceptor::from(server_configs(&mesh, &kernel).server());
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let peer_addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        let mut tls = acceptor.accept(sock).await.expect("handshake");
        answer_preamble(&mut tls).await;
        let (mut echoed, mut refreshes, mut buf) = (0u64, 0u32, vec![0u8; 64 * 1024]);
        loop {
            let n = match tls.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            if tls.write_all(&buf[..n]).await.is_err() {
                break;
            }
            let before = echoed;
            echoed += n as u64;
            if echoed / MIB > before / MIB {
                tls.get_mut().1.refresh_traffic_keys().expect("refresh");
                refreshes += 1;
            }
        }
        let _ = tls.shutdown().await;
        (echoed, refreshes)
    });
    let mut opts = Opts::new("auto");
    opts.expected_server = id("server");
    let client =
        client_node(&node_config(&mesh.dir.path().join("ca"), "client", &opts), peer_addr, &id("server")).await;
    let before = tls_stat();
    if rekeys {
        echo_exact(client.outbound_addrs()[0], 8 * MIB, 9).await;
        let (echoed, refreshes) = server.await.expect("server task");
        let delta = tls_stat_delta(&before);
        eprintln!("peer KeyUpdates: {refreshes} over {echoed} bytes echoed; tls_stat deltas {delta:?}");
        assert_eq!(echoed, 8 * MIB);
        assert!(refreshes >= 7, "the peer refreshed its keys {refreshes} times");
        // Each refresh: the peer's next key installed for receive. Ours (it asked) goes out
        // before our next data record, so requests that arrive while we have nothing to send
        // share one update, and none is owed after our close_notify: at least one, at most one
        // per request. The byte-exact echo says the peer opened every record under the key we
        // announced.
        assert!(delta["TlsRxRekeyOk"] >= i64::from(refreshes), "{delta:?}");
        assert!((1..=i64::from(refreshes)).contains(&delta["TlsTxRekeyOk"]), "{delta:?}");
        assert_eq!(delta["TlsTxRekeyError"], 0, "{delta:?}");
        assert_eq!(delta["TlsDecryptError"], 0, "{delta:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let c = client.metrics_text();
        assert_eq!(metric(&c, "weir_connections_closed_total", &["outcome=\"closed\""]), 1.0, "{c}");
        return;
    }
    let s = TcpStream::connect(client.outbound_addrs()[0]).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move { write_pattern(&mut w, 8 * MIB, 9).await });
    let got = read_hash(&mut r).await;
    let wrote = writer.await.expect("writer task");
    assert!(got.is_err() || wrote.is_err(), "the app must see an error: read {got:?}, write {wrote:?}");
    assert!(got.as_ref().map_or(true, |(n, _)| *n < 8 * MIB), "the transfer must not look complete: {got:?}");
    let (_, refreshes) = server.await.expect("server task");
    assert!(refreshes >= 1, "the peer sent a KeyUpdate");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_closed_total", &["outcome=\"error\""]), 1.0, "{c}");
    assert_eq!(tls_stat_delta(&before)["TlsDecryptError"], 0, "no record was opened under the wrong key");
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
