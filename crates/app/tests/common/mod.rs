//! Test harness shared by the host suite (`hop`, `wire`) and the guest-kernel suite (`ktls`):
//! a CA, two in-process nodes (client side and server side), a backend with scripted
//! behaviours, and clients that hash what they send and receive.
#![allow(dead_code, reason = "each test binary uses a different subset")]
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

pub mod cases;
pub mod dpu;

use sha2::{Digest, Sha256};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_app::Node;
use weir_identity::{Ca, SpiffeId, Validity};

pub const TD: &str = "weir.local";

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

pub fn id(sa: &str) -> SpiffeId {
    SpiffeId::workload(TD, "test", sa).expect("valid id")
}

/// What the backend does with each connection.
#[derive(Clone, Copy, Debug)]
pub enum Behaviour {
    /// Echo everything; half-close after the client does.
    Echo,
    /// Send `n` bytes, half-close, then read to EOF and record what arrived.
    SpeakFirst(u64),
    /// Read `n` bytes, then reset the connection.
    ResetAfter(u64),
}

/// (bytes, sha256) of what each SpeakFirst connection received.
pub type Received = Arc<Mutex<Vec<(u64, Vec<u8>)>>>;

/// A backend service with counters.
pub struct Backend {
    pub addr: SocketAddr,
    pub accepted: Arc<AtomicUsize>,
    /// (bytes, sha256) received by SpeakFirst connections after their own half-close.
    pub received: Received,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    pub async fn start(behaviour: Behaviour) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind backend");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (acc, rec) = (accepted.clone(), received.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { continue };
                acc.fetch_add(1, Ordering::SeqCst);
                let rec = rec.clone();
                tokio::spawn(async move { serve(s, behaviour, rec).await });
            }
        });
        Self { addr, accepted, received, task }
    }
}

async fn serve(mut s: TcpStream, behaviour: Behaviour, rec: Received) {
    match behaviour {
        Behaviour::Echo => {
            let (mut r, mut w) = s.split();
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        }
        Behaviour::SpeakFirst(n) => {
            let _ = write_pattern(&mut s, n, 7).await;
            let _ = s.shutdown().await;
            let got = read_hash(&mut s).await.unwrap_or((0, vec![]));
            rec.lock().unwrap().push(got);
        }
        Behaviour::ResetAfter(n) => {
            let mut buf = vec![0u8; n as usize];
            let _ = s.read_exact(&mut buf).await;
            #[allow(deprecated, reason = "the test wants the blocking RST close")]
            s.set_linger(Some(Duration::ZERO)).expect("linger");
            drop(s);
        }
    }
}

/// Deterministic bytes: `len` of them from `seed`, written in 64 KiB chunks. Returns sha256.
pub async fn write_pattern<W: AsyncWriteExt + Unpin>(w: &mut W, len: u64, seed: u64) -> std::io::Result<Vec<u8>> {
    let mut h = Sha256::new();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut left = len;
    let mut buf = vec![0u8; 64 * 1024];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let b = state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        h.update(&buf[..n]);
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    Ok(h.finalize().to_vec())
}

pub async fn pattern_hash(len: u64, seed: u64) -> Vec<u8> {
    write_pattern(&mut tokio::io::sink(), len, seed).await.expect("sink")
}

pub async fn read_hash<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<(u64, Vec<u8>)> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok((total, h.finalize().to_vec()));
        }
        h.update(&buf[..n]);
        total += n as u64;
    }
}

/// Sends `len` pattern bytes through `addr` to an echo backend and checks what comes back.
pub async fn echo_exact(addr: SocketAddr, len: u64, seed: u64) {
    let s = TcpStream::connect(addr).await.expect("connect to outbound");
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let h = write_pattern(&mut w, len, seed).await.expect("write through mesh");
        w.shutdown().await.expect("half-close");
        h
    });
    let (got_len, got_hash) = read_hash(&mut r).await.expect("read echo through mesh");
    let sent_hash = writer.await.expect("writer");
    assert_eq!(got_len, len, "echo length for a {len}-byte transfer");
    assert_eq!(got_hash, sent_hash, "echo sha256 for a {len}-byte transfer");
}

/// Two nodes and a backend in one trust domain.
pub struct Mesh {
    pub dir: tempfile::TempDir,
    pub ca: Ca,
    pub server: Node,
    pub client: Node,
    pub backend: Backend,
}

/// Knobs for `Mesh::start`.
#[derive(Clone, Debug)]
pub struct Opts {
    pub ktls: &'static str,
    pub behaviour: Behaviour,
    pub svid_ttl_secs: u64,
    pub handshake_timeout_ms: u64,
    /// The SPIFFE ID the client expects of the server node.
    pub expected_server: SpiffeId,
    /// `ktls.records_per_key`.
    pub records_per_key: u64,
    /// Where the `echo` service's backend listens: `None` = the scripted [`Backend`].
    pub backend: Option<SocketAddr>,
    /// Identities the `echo` service admits.
    pub allow: Vec<SpiffeId>,
    /// TOML appended to the `echo` service's table (e.g. `protocol = "http"` and its `http` section).
    pub service_extra: String,
}

impl Opts {
    pub fn new(ktls: &'static str) -> Self {
        Self {
            ktls,
            behaviour: Behaviour::Echo,
            svid_ttl_secs: 3600,
            handshake_timeout_ms: 5000,
            expected_server: id("server"),
            records_per_key: 1 << 23,
            backend: None,
            allow: vec![id("client")],
            service_extra: String::new(),
        }
    }
}

impl Mesh {
    pub async fn start(opts: Opts) -> Self {
        init_logs();
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_dir = dir.path().join("ca");
        let ca = Ca::init(&ca_dir, TD).expect("ca init");
        let backend = Backend::start(opts.behaviour).await;
        let common = |sa: &str| node_config(&ca_dir, sa, &opts);
        let allow: Vec<String> = opts.allow.iter().map(|a| format!("\"{a}\"")).collect();
        let server_cfg = format!(
            "{}[inbound]\nlisten = \"127.0.0.1:0\"\nhandshake_timeout_ms = {}\n[[inbound.services]]\nname = \"echo\"\nbackend = \"{}\"\nallow = [{}]\n{}",
            common("server"),
            opts.handshake_timeout_ms,
            opts.backend.unwrap_or(backend.addr),
            allow.join(", "),
            opts.service_extra
        );
        let server = Node::start(weir_config::parse(&server_cfg, "server.toml").expect("server config"))
            .await
            .expect("server node");
        let client =
            client_node(&common("client"), server.inbound_addr().expect("inbound"), &opts.expected_server).await;
        Self { dir, ca, server, client, backend }
    }

    pub fn outbound(&self) -> SocketAddr {
        self.client.outbound_addrs()[0]
    }

    pub fn inbound(&self) -> SocketAddr {
        self.server.inbound_addr().expect("inbound")
    }

    /// A TLS client config holding an SVID for `sa` issued by `ca` over `validity`, expecting
    /// the server node's identity.
    pub fn client_tls(&self, ca: &Ca, sa: &str, validity: Validity) -> Arc<rustls::ClientConfig> {
        self.client_tls_to(ca, sa, validity, &id("server"))
    }

    /// [`Mesh::client_tls`], expecting the server to be `expected`.
    pub fn client_tls_to(
        &self,
        ca: &Ca,
        sa: &str,
        validity: Validity,
        expected: &SpiffeId,
    ) -> Arc<rustls::ClientConfig> {
        let svid = Arc::new(
            ca.issue(&SpiffeId::workload(ca.trust_domain(), "test", sa).expect("id"), validity).expect("issue"),
        );
        let bundle = weir_identity::IdentitySource::trust_bundle(&self.ca).expect("bundle");
        let cfgs = weir_tls::TlsConfigs::new(svid, &bundle, None, false).expect("tls configs");
        cfgs.client(expected).expect("client config")
    }

    /// Waits until both nodes have no open mesh connection (closing is asynchronous).
    pub async fn settle(&self) {
        for _ in 0..200 {
            if self.client.active_connections() == 0 && self.server.active_connections() == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "connections still open: client {} server {}",
            self.client.active_connections(),
            self.server.active_connections()
        );
    }
}

/// The config text every test node shares: identity `sa`, admin on an ephemeral port.
pub fn node_config(ca_dir: &std::path::Path, sa: &str, opts: &Opts) -> String {
    format!(
        "trust_domain = \"{TD}\"\n[node]\nname = \"{sa}\"\n[identity]\nnamespace = \"test\"\nservice_account = \"{sa}\"\nca_dir = \"{}\"\nsvid_ttl_secs = {}\n[admin]\nlisten = \"127.0.0.1:0\"\n[ktls]\nmode = \"{}\"\nrecords_per_key = {}\n",
        ca_dir.display(),
        opts.svid_ttl_secs,
        opts.ktls,
        opts.records_per_key
    )
}

/// A client-side node with one outbound route to service `echo` at `peer`, which must present
/// `peer_id`.
pub async fn client_node(common: &str, peer: SocketAddr, peer_id: &SpiffeId) -> Node {
    let cfg = format!("{common}[[outbound]]\nlisten = \"127.0.0.1:0\"\nservice = \"echo\"\npeer = \"{peer}\"\npeer_id = \"{peer_id}\"\n");
    Node::start(weir_config::parse(&cfg, "client.toml").expect("client config")).await.expect("client node")
}

/// Sums the samples of metric `name` whose label text contains every string in `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
