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
