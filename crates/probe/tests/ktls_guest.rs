//! The probe against live kTLS sockets: in a guest kernel with CONFIG_TLS (scripts/test.sh
//! `ktls`, tests/vm/run-in-vm.sh as cargo runner) this process opens a TLS 1.3 connection to
//! itself, hands both ends to kernel TLS, and the probe must list both sockets as software kTLS
//! owned by this process. On a kernel without kTLS it fails with the reason.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_identity::{Ca, IdentitySource, SpiffeId, Validity};
use weir_probe::ulp::TlsConf;
use weir_tls::ktls::{self, Support, Switched};
use weir_tls::TlsConfigs;

fn configs(ca: &Ca, sa: &str, suites: &[rustls::SupportedCipherSuite]) -> TlsConfigs {
    let id = SpiffeId::workload("weir.test", "test", sa).expect("id");
    let svid = Arc::new(ca.issue(&id, Validity::starting_now(Duration::from_secs(600))).expect("svid"));
    TlsConfigs::new(svid, &ca.trust_bundle().expect("bundle"), Some(suites), true).expect("configs")
}

/// A TLS 1.3 connection from this process to itself, both ends switched to kTLS.
async fn ktls_pair() -> (Switched, Switched) {
    let kernel = match ktls::detect().await {
        Support::Available(k) => k,
        Support::Unavailable(reason) => panic!("this suite needs a kernel with kTLS (scripts/test.sh ktls): {reason}"),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::init(&dir.path().join("ca"), "weir.test").expect("ca");
    let server_cfg = configs(&ca, "server", &kernel.suites);
    let client_cfg = configs(&ca, "client", &kernel.suites);
    let server_id = server_cfg.id();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let config = server_cfg.server();
    let server_kernel = kernel.clone();
    let server = tokio::spawn(async move {
        let (sock, _) = listener.accept().await.expect("accept");
        ktls::prepare(&sock).expect("server ULP");
        let mut tls = ktls::accept(config, sock).await.expect("server handshake");
        let mut ping = [0u8; 4];
        tls.read_exact(&mut ping).await.expect("ping");
        tls.write_all(b"pong").await.expect("pong");
        tls.flush().await.expect("flush");
        tls.switch(&server_kernel).await.expect("server switch")
    });
    let sock = TcpStream::connect(addr).await.expect("connect");
    ktls::prepare(&sock).expect("client ULP");
    let config = client_cfg.client(&server_id).expect("client config");
    let name = rustls::pki_types::ServerName::try_from("weir.test").expect("name");
    let mut tls = ktls::connect(config, name, sock).await.expect("client handshake");
    tls.write_all(b"ping").await.expect("ping");
    tls.flush().await.expect("flush");
    let mut pong = [0u8; 4];
    tls.read_exact(&mut pong).await.expect("pong");
    let client = tls.switch(&kernel).await.expect("client switch");
    let server = server.await.expect("server task");
    (client, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_ktls_sockets_are_listed_as_software_tls13_owned_by_this_process() {
    let (mut client, mut server) = ktls_pair().await;
    // Bytes through the kernel both ways: the sockets are really in kTLS, not just configured.
    client.socket.write_all(b"through kTLS").await.expect("kTLS write");
    let mut got = [0u8; 12];
    server.socket.read_exact(&mut got).await.expect("kTLS read");
    assert_eq!(&got, b"through kTLS");
    server.socket.write_all(b"back").await.expect("kTLS write back");
    let mut back = [0u8; 4];
    client.socket.read_exact(&mut back).await.expect("kTLS read back");

    let ends = [client.socket.local_addr().expect("addr"), server.socket.local_addr().expect("addr")];
    // The raw attribute bytes, printed so they can be kept as parser test vectors.
    for (local, bytes) in weir_probe::raw_ulp_payloads().expect("sock_diag dump") {
        if ends.contains(&local) {
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            eprintln!("ULP_INFO {local} ({} bytes): {hex}", bytes.len());
        }
    }

    let sockets = weir_probe::tcp_sockets().expect("sock_diag dump");
    // Found by address pair: a listener or another socket may share a local port.
    let pairs = [(ends[0], ends[1]), (ends[1], ends[0])];
    for (end, peer) in pairs {
        let s = sockets
            .iter()
            .find(|s| s.local == end && s.remote == peer)
            .unwrap_or_else(|| panic!("{end} -> {peer} not in the dump"));
        assert_eq!(s.state.name(), "ESTABLISHED", "{end}");
        let tls = s.tls().unwrap_or_else(|| panic!("{end} has no parsed kTLS info: {:?}", s.ulp));
        assert_eq!((tls.tx, tls.rx), (TlsConf::Sw, TlsConf::Sw), "{end}: software kTLS both ways");
        assert_eq!(tls.version, Some(0x0304), "{end}: TLS 1.3");
        assert!(tls.cipher_label().starts_with("AES-GCM"), "{end}: AES-GCM expected, got {}", tls.cipher_label());
        let info = s.info.as_ref().unwrap_or_else(|| panic!("{end}: no TCP_INFO"));
        assert!(info.bytes_received.unwrap_or(0) > 0, "{end}: received bytes counted: {info:?}");
        // The same facts asked for this one socket (how a node labels a connection's mode).
        let one = weir_probe::tcp_socket(s.local, s.remote).expect("query").expect("the socket");
        assert_eq!(one.tls().map(|t| (t.tx, t.rx)), Some((TlsConf::Sw, TlsConf::Sw)), "{end}");
    }

    let report = weir_probe::scan().await;
    let listed =
        report.ktls_sockets.value().unwrap_or_else(|| panic!("kTLS sockets unknown: {:?}", report.ktls_sockets));
    let me = std::process::id();
    for end in ends {
        let s = listed
            .iter()
            .find(|s| s.local == end.to_string())
            .unwrap_or_else(|| panic!("{end} not listed: {listed:?}"));
        assert_eq!((s.tx.as_str(), s.rx.as_str(), s.version.as_str()), ("sw", "sw", "1.3"), "{s:?}");
        assert!(s.owners.iter().any(|p| p.pid == me), "{end}: owner pid {me} expected in {:?}", s.owners);
    }
    assert!(report.kernel.ktls.value().is_some_and(|k| k.available), "{:?}", report.kernel.ktls);
    assert!(report.findings.iter().any(|f| f.kind == "ktls_socket_sw"), "{:?}", report.findings);
    // Rekey support as the probe found it on a live socket, checked against the kernel the
    // runner booted (scripts/test.sh: 7.2 rekeys, 6.1 cannot).
    let rekey = report.kernel.tls13_rekey.value().unwrap_or_else(|| panic!("{:?}", report.kernel.tls13_rekey));
    let expected = match std::env::var("WEIR_GUEST_KERNEL").as_deref() {
        Ok("6.1") => false,
        Ok("7.2") => true,
        other => {
            panic!("WEIR_GUEST_KERNEL must name the guest kernel, 6.1 or 7.2 (scripts/test.sh sets it): {other:?}")
        }
    };
    assert_eq!(rekey.supported, expected, "{rekey:?}");
    let json = serde_json::to_string_pretty(&report).expect("json");
    eprintln!("{json}");
}
