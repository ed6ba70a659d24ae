//! Hop behaviours asserted the same way on the host kernel (userspace TLS) and in the guest
//! kernel (kTLS): each case takes the config's `ktls.mode` and the data-path mode it expects.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use super::*;

/// Byte-exact echo through client node -> server node -> backend for each size, one mesh
/// connection per size, every connection in `mode` on both nodes.
pub async fn byte_exact(ktls: &'static str, mode: &str, sizes: &[u64]) {
    let mesh = Mesh::start(Opts::new(ktls)).await;
    for (i, &len) in sizes.iter().enumerate() {
        echo_exact(mesh.outbound(), len, i as u64 + 1).await;
    }
    mesh.settle().await;
    let n = sizes.len() as f64;
    let (c, s) = (mesh.client.metrics_text(), mesh.server.metrics_text());
    let mode_label = format!("mode=\"{mode}\"");
    assert_eq!(
        metric(&c, "weir_connections_opened_total", &["direction=\"Outbound\"", &mode_label]),
        n,
        "client conns in {mode}:\n{c}"
    );
    assert_eq!(
        metric(&s, "weir_connections_opened_total", &["direction=\"Inbound\"", &mode_label]),
        n,
        "server conns in {mode}:\n{s}"
    );
    assert_eq!(metric(&s, "weir_connections_closed_total", &["outcome=\"closed\""]), n, "clean closes:\n{s}");
    let total: u64 = sizes.iter().sum();
    for (text, who) in [(&c, "client"), (&s, "server")] {
        assert_eq!(metric(text, "weir_bytes_total", &["flow=\"ToPeer\""]), total as f64, "{who} bytes to peer");
        assert_eq!(metric(text, "weir_bytes_total", &["flow=\"FromPeer\""]), total as f64, "{who} bytes from peer");
    }
    let userspace = metric(&c, "weir_userspace_bytes_total", &[]) + metric(&s, "weir_userspace_bytes_total", &[]);
    if mode == "userspace" {
        assert_eq!(userspace, 4.0 * total as f64, "userspace TLS copies every byte on both nodes, both ways");
    } else {
        assert_eq!(userspace, 0.0, "kTLS splice path must move no payload byte through userspace");
    }
}

/// The backend half-closes first, then still receives the client's bytes.
pub async fn half_close_backend_first(ktls: &'static str) {
    let mut opts = Opts::new(ktls);
    opts.behaviour = Behaviour::SpeakFirst(300_000);
    let mesh = Mesh::start(opts).await;
    let mut s = TcpStream::connect(mesh.outbound()).await.expect("connect");
    let (n, h) = read_hash(&mut s).await.expect("read until the backend's half-close");
    assert_eq!((n, h), (300_000, pattern_hash(300_000, 7).await), "bytes before the backend's FIN");
    let sent = write_pattern(&mut s, 200_000, 9).await.expect("write after the peer's half-close");
    s.shutdown().await.expect("client half-close");
    for _ in 0..200 {
        if let Some(got) = mesh.backend.received.lock().unwrap().first().cloned() {
            assert_eq!(got, (200_000, sent), "backend must receive the client's bytes after its own FIN");
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("backend never saw the client's bytes after half-closing");
}

/// A backend reset reaches the app as a reset, not as a clean end of stream.
pub async fn backend_reset_propagates(ktls: &'static str) {
    let mut opts = Opts::new(ktls);
    opts.behaviour = Behaviour::ResetAfter(1000);
    let mesh = Mesh::start(opts).await;
    let mut s = TcpStream::connect(mesh.outbound()).await.expect("connect");
    s.write_all(&[7u8; 1000]).await.expect("write");
    let mut buf = [0u8; 16];
    let got = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await.expect("the reset must arrive");
    match got {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "app must see a reset, got {e}"),
        Ok(n) => panic!("app saw a clean read of {n} bytes instead of a reset"),
    }
    mesh.settle().await;
    let s = mesh.server.metrics_text();
    assert_eq!(
        metric(&s, "weir_connections_closed_total", &["outcome=\"reset_local\""]),
        1.0,
        "server records the backend reset:\n{s}"
    );
}

/// Many connections at once, each byte-exact.
pub async fn concurrent(ktls: &'static str, conns: usize, len: u64) {
    let mesh = Mesh::start(Opts::new(ktls)).await;
    let addr = mesh.outbound();
    let tasks: Vec<_> = (0..conns).map(|i| tokio::spawn(echo_exact(addr, len, 1000 + i as u64))).collect();
    for t in tasks {
        t.await.expect("connection task");
    }
    mesh.settle().await;
    let s = mesh.server.metrics_text();
    assert_eq!(metric(&s, "weir_connections_closed_total", &["outcome=\"closed\""]), conns as f64, "{s}");
}

/// A running `tcpdump -i lo` writing a pcap for one TCP port.
pub struct Capture {
    child: std::process::Child,
    pub file: std::path::PathBuf,
}

impl Capture {
    /// Starts capturing and waits until tcpdump reports it is listening.
    pub fn start(dir: &std::path::Path, port: u16) -> Self {
        use std::io::BufRead;
        let file = dir.join(format!("port-{port}.pcap"));
        let mut child = std::process::Command::new("tcpdump")
            .args(["-i", "lo", "--immediate-mode", "-B", "32768", "-U", "-s", "0", "-w"])
            .arg(&file)
            .args(["tcp", "port", &port.to_string()])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("tcpdump must be installed (make setup) and runnable as root");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = std::io::BufReader::new(stderr).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        assert!(first.contains("listening on"), "tcpdump did not start: {first}");
        std::thread::spawn(move || for _ in lines {});
        Self { child, file }
    }

    /// Waits (up to 5 s: tcpdump lags on a 1-vCPU guest) until the file holds at least
    /// `expect` bytes, then stops tcpdump (SIGINT flushes the file) and returns the capture.
    pub fn finish(mut self, expect: usize) -> Vec<u8> {
        for _ in 0..100 {
            if std::fs::metadata(&self.file).map_or(0, |m| m.len() as usize) >= expect {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = std::process::Command::new("kill").args(["-INT", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        std::fs::read(&self.file).expect("pcap written")
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A known marker sent through the mesh is visible on the plaintext backend leg (the capture
/// works) and absent from the inter-node leg (it is encrypted), in `mode`.
pub async fn plaintext_never_on_the_wire(ktls: &'static str, mode: &str) {
    let mesh = Mesh::start(Opts::new(ktls)).await;
    let wire = Capture::start(mesh.dir.path(), mesh.inbound().port());
    let plain = Capture::start(mesh.dir.path(), mesh.backend.addr.port());
    let marker = b"WEIR-PLAINTEXT-MARKER-7f3a9c";
    let payload: Vec<u8> = marker.iter().copied().cycle().take(marker.len() * 2000).collect();
    let mut s = TcpStream::connect(mesh.outbound()).await.expect("connect");
    s.write_all(&payload).await.expect("write");
    s.shutdown().await.expect("half-close");
    let (n, _) = read_hash(&mut s).await.expect("echo");
    assert_eq!(n, payload.len() as u64, "echo through the mesh");
    mesh.settle().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (wire, plain) = (wire.finish(payload.len() * 2), plain.finish(payload.len() * 2));
    assert!(contains(&plain, marker), "positive control: the marker is visible on the plaintext backend leg");
    assert!(wire.len() > payload.len(), "the inter-node capture holds the traffic ({} bytes)", wire.len());
    assert!(!contains(&wire, marker), "plaintext marker found on the inter-node leg");
    let c = mesh.client.metrics_text();
    assert_eq!(metric(&c, "weir_connections_opened_total", &[&format!("mode=\"{mode}\"")]), 1.0, "{c}");
}
