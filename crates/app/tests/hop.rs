//! The mesh hop on the host kernel: real sockets on loopback, userspace TLS (this kernel has
//! no kTLS; the guest suite `ktls` runs the same cases with kTLS).
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::cases;
use common::*;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_identity::{Ca, Validity};
use weir_tls::preamble::{Protocol, Request, Status};

const MIB: u64 = 1 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte_exact_all_sizes() {
    cases::byte_exact("off", "userspace", &[0, 1, 16383, 16385, MIB, 256 * MIB]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_backend_first() {
    cases::half_close_backend_first("off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_reset_propagates() {
    cases::backend_reset_propagates("off").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_connections() {
    cases::concurrent("off", 200, 64 * 1024).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_on_a_kernel_without_ktls_falls_back_to_userspace_and_says_why() {
    let ulps = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default();
    let support = weir_tls::ktls::detect().await;
    match (&support, ulps.contains("tls")) {
        (weir_tls::ktls::Support::Unavailable(reason), false) => {
            assert!(reason.contains("CONFIG_TLS"), "reason names the missing kernel option: {reason}")
        }
        (weir_tls::ktls::Support::Available(_), true) => {}
        (s, has) => panic!("detection {s:?} disagrees with tcp_available_ulp (tls listed: {has})"),
    }
    let mesh = Mesh::start(Opts::new("auto")).await;
    echo_exact(mesh.outbound(), 100_000, 3).await;
    mesh.settle().await;
    let want = if ulps.contains("tls") { "ktls_sw" } else { "userspace" };
    let c = mesh.client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_opened_total", &[&format!("mode=\"{want}\"")]), 1.0, "{c}");
}

/// Connects straight to the server node's inbound listener with `tls` and asks for `echo`.
/// Returns the preamble status, or the error that ended the attempt.
async fn probe_inbound(mesh: &Mesh, tls: std::sync::Arc<rustls::ClientConfig>) -> Result<Status, String> {
    let tcp = TcpStream::connect(mesh.inbound()).await.map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("weir.mesh").expect("name");
    let mut s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.map_err(|e| e.to_string())?;
    s.write_all(&Request { service: "echo".into(), protocol: Protocol::Tcp }.encode().expect("encode"))
        .await
        .map_err(|e| e.to_string())?;
    let mut resp = [0u8; 6];
    s.read_exact(&mut resp).await.map_err(|e| e.to_string())?;
    Status::decode(&resp).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_without_a_valid_allowed_svid_are_refused_and_reach_nothing() {
    let mesh = Mesh::start(Opts::new("off")).await;
    let now = Validity::starting_now(Duration::from_secs(600));

    // Another trust domain: its CA is not in our bundle.
    let other_dir = mesh.dir.path().join("other-ca");
    let other = Ca::init(&other_dir, "other.local").expect("other ca");
    let r = probe_inbound(&mesh, mesh.client_tls(&other, "client", now)).await;
    assert!(r.is_err(), "foreign trust domain must fail the handshake, got {r:?}");

    // Expired SVID from our own CA.
    let past = Validity {
        not_before: SystemTime::now() - Duration::from_secs(7200),
        not_after: SystemTime::now() - Duration::from_secs(3600),
    };
    let r = probe_inbound(&mesh, mesh.client_tls(&mesh.ca, "client", past)).await;
    assert!(r.is_err(), "expired SVID must fail the handshake, got {r:?}");

    // Valid SVID, identity not on the allow-list.
    let r = probe_inbound(&mesh, mesh.client_tls(&mesh.ca, "intruder", now)).await;
    assert_eq!(r, Ok(Status::Denied), "a valid but unlisted identity is denied by policy");

    // No client certificate at all.
    let bundle = weir_identity::IdentitySource::trust_bundle(&mesh.ca).expect("bundle");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(bundle.roots[0].clone()).expect("root");
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = weir_tls::SpiffeServerVerifier::new(std::sync::Arc::new(roots), id("server"), provider.clone());
    let no_cert = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("tls13")
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(verifier))
        .with_no_client_auth();
    let r = probe_inbound(&mesh, std::sync::Arc::new(no_cert)).await;
    assert!(r.is_err(), "no client certificate must be refused, got {r:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = mesh.server.metrics_text();
    assert_eq!(
        metric(&s, "weir_connections_refused_total", &["reason=\"tls_handshake\""]),
        3.0,
        "three handshakes refused:\n{s}"
    );
    assert_eq!(
        metric(&s, "weir_connections_refused_total", &["reason=\"not_allowed\""]),
        1.0,
        "one identity denied:\n{s}"
    );
    assert_eq!(metric(&s, "weir_connections_opened_total", &[]), 0.0, "no refused peer opened a connection");
    assert_eq!(mesh.backend.accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the backend");

    // The mesh still works for the allowed client.
    echo_exact(mesh.outbound(), 10_000, 5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_refuses_a_peer_with_the_wrong_spiffe_id() {
    let mut opts = Opts::new("off");
    opts.expected_server = id("someone-else");
    let mesh = Mesh::start(opts).await;
    // The refusal is a reset; it may even beat the end of connect(). The kernel reports it to
    // whichever call comes first, so the write's error counts too.
    let r = async {
        let mut s = TcpStream::connect(mesh.outbound()).await?;
        s.write_all(b"secret").await?;
        let mut buf = [0u8; 8];
        s.read(&mut buf).await
    };
    let r = tokio::time::timeout(Duration::from_secs(10), r).await.expect("refusal arrives");
    assert!(matches!(r, Err(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset), "app sees a reset, got {r:?}");
    let c = mesh.client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_refused_total", &["reason=\"peer_id_mismatch\""]), 1.0, "{c}");
    assert_eq!(mesh.backend.accepted.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing reached the backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_closed_counted_and_harms_no_one() {
    let mut opts = Opts::new("off");
    opts.handshake_timeout_ms = 500;
    let mesh = Mesh::start(opts).await;

    // A long transfer runs while the bad inputs arrive.
    let good = tokio::spawn(echo_exact(mesh.outbound(), 64 * MIB, 11));

    // Silent client: connects, sends nothing.
    let silent = TcpStream::connect(mesh.inbound()).await.expect("connect");
    // Garbage instead of TLS.
    let mut garbage = TcpStream::connect(mesh.inbound()).await.expect("connect");
    garbage.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(Duration::from_secs(5), garbage.read(&mut buf)).await.expect("garbage gets an answer");
    assert!(matches!(r, Ok(_) | Err(_)), "closed or alerted");
    // TLS 1.2 only: no suite or version in common.
    let tls12 =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS12])
            .expect("tls12")
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(weir_tls::SpiffeServerVerifier::new(
                std::sync::Arc::new(rustls::RootCertStore::empty()),
                id("server"),
                std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
            )))
            .with_no_client_auth();
    let r = probe_inbound(&mesh, std::sync::Arc::new(tls12)).await;
    assert!(r.is_err(), "a TLS 1.2-only hello must be refused, got {r:?}");
    // Allowed identity, malformed preamble.
    let tls = mesh.client_tls(&mesh.ca, "client", Validity::starting_now(Duration::from_secs(600)));
    let tcp = TcpStream::connect(mesh.inbound()).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("weir.mesh").expect("name");
    let mut s = tokio_rustls::TlsConnector::from(tls).connect(name, tcp).await.expect("handshake");
    s.write_all(b"WEIR\x01\xffXXXX").await.expect("write");
    let n = s.read(&mut buf).await.unwrap_or(0);
    assert_eq!(n, 0, "a malformed preamble gets no answer, only a close");

    tokio::time::sleep(Duration::from_millis(800)).await;
    drop(silent);
    good.await.expect("the good transfer is unaffected");
    let st = mesh.server.metrics_text();
    assert_eq!(
        metric(&st, "weir_connections_refused_total", &["reason=\"handshake_timeout\""]),
        1.0,
        "silent client timed out:\n{st}"
    );
    assert_eq!(
        metric(&st, "weir_connections_refused_total", &["reason=\"tls_handshake\""]),
        2.0,
        "garbage and TLS 1.2 refused:\n{st}"
    );
    assert_eq!(
        metric(&st, "weir_connections_refused_total", &["reason=\"preamble_malformed\""]),
        1.0,
        "bad preamble refused:\n{st}"
    );
    assert_eq!(
        mesh.backend.accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "only the good connection reached the backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn svid_rotation_during_a_long_transfer_keeps_it_intact() {
    let mut opts = Opts::new("off");
    opts.svid_ttl_secs = 4;
    let mesh = Mesh::start(opts).await;
    let first_serial = mesh.server.identity().current().serial.clone();
    let s = TcpStream::connect(mesh.outbound()).await.expect("connect");
    let (mut r, mut w) = s.into_split();
    let reader = tokio::spawn(async move { read_hash(&mut r).await.expect("read") });
    let mut sent = sha2::Sha256::default();
    use sha2::Digest;
    // ~6 s of trickled traffic: at least two rotations of a 4 s SVID happen meanwhile.
    for i in 0..60u64 {
        let chunk = vec![(i % 251) as u8; 256 * 1024];
        sent.update(&chunk);
        w.write_all(&chunk).await.expect("write during rotation");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    w.shutdown().await.expect("half-close");
    let (n, h) = reader.await.expect("reader");
    assert_eq!((n, h), (60 * 256 * 1024, sent.finalize().to_vec()), "transfer intact across rotations");
    let rotations = mesh.server.identity().rotation_state().rotations;
    assert!(rotations >= 2, "server rotated {rotations} times in 6 s with a 4 s SVID");
    assert_ne!(mesh.server.identity().current().serial, first_serial, "a new SVID is in use");
    // New handshakes use the new SVID and still pass.
    echo_exact(mesh.outbound(), 1000, 4).await;
    let readyz = mesh.server.identity().readiness(SystemTime::now());
    assert_eq!(readyz, Ok(()), "ready after rotations");
}
