//! The reference chain: two haproxy instances configured as the same two-hop mTLS mesh as
//! Weir (haproxy A takes plaintext and originates TLS 1.3 with a client certificate; haproxy B
//! terminates it, verifies the client and forwards plaintext), with their best settings:
//! one thread each (like the pinned Weir node), splice on the plaintext legs. In HTTP mode
//! (`mode http` on both, for the L7 scenario) both parse every message, keep both sides alive
//! and reuse server connections; splice cannot apply there (each process has one TLS leg).
use super::procs::Proc;
use std::net::SocketAddr;
use std::path::Path;
use weir_identity::{Ca, IdentitySource, SpiffeId};

/// A running chain: apps connect to `entry`.
pub struct Chain {
    pub entry: SocketAddr,
    procs: Vec<Proc>,
}

impl Chain {
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).collect()
    }
}

/// What the chain proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Byte streams (`mode tcp`, `option splice-auto`).
    Tcp,
    /// HTTP/1.1 (`mode http`, keep-alive on both sides, `http-reuse always`).
    Http,
}

/// Issues PEM bundles from `ca` and starts both haproxy instances pinned to `cpus`.
pub fn start(dir: &Path, ca: &Ca, backend: SocketAddr, cpus: &str) -> anyhow::Result<Chain> {
    start_mode(dir, ca, backend, cpus, Mode::Tcp)
}

/// As [`start`], in `mode`.
pub fn start_mode(dir: &Path, ca: &Ca, backend: SocketAddr, cpus: &str, mode: Mode) -> anyhow::Result<Chain> {
    let pem = |sa: &str| -> anyhow::Result<std::path::PathBuf> {
        let svid =
            ca.fetch_svid(&SpiffeId::workload(ca.trust_domain(), "bench", sa)?, std::time::Duration::from_secs(86400))?;
        let (chain, key) = svid.to_pem();
        let path = dir.join(format!("haproxy-{sa}.pem"));
        std::fs::write(&path, format!("{chain}{key}"))?;
        Ok(path)
    };
    let (client_pem, server_pem) = (pem("haproxy-client")?, pem("haproxy-server")?);
    let ca_pem = dir.join("haproxy-ca.pem");
    std::fs::write(&ca_pem, ca.root_pem())?;
    let (entry, middle) = (super::free_port()?, super::free_port()?);
    let defaults = match mode {
        Mode::Tcp => "defaults\n  mode tcp\n  option splice-auto\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n",
        Mode::Http => "defaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout http-request 1h\n  timeout http-keep-alive 1h\n",
    };
    let global = format!("global\n  nbthread 1\n  maxconn 7900\n  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256\n  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256\n{defaults}");
    let a = format!(
        "{global}listen out\n  bind {entry}\n  maxconn 7900\n  server b {middle} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3\n",
        client_pem.display(),
        ca_pem.display()
    );
    let b = format!(
        "{global}listen in\n  bind {middle} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3\n  maxconn 7900\n  server backend {backend}\n",
        server_pem.display(),
        ca_pem.display()
    );
    let mut procs = Vec::new();
    for (name, cfg) in [("a", a), ("b", b)] {
        let path = dir.join(format!("haproxy-{name}.cfg"));
        std::fs::write(&path, cfg)?;
        let path_s = path.display().to_string();
        procs.push(Proc::pinned(cpus, "haproxy", &["-db", "-f", &path_s], &dir.join(format!("haproxy-{name}.log")))?);
    }
    for addr in [entry, middle] {
        if let Err(e) = super::wait_listening(addr) {
            let logs: String = ["a", "b"]
                .iter()
                .map(|n| std::fs::read_to_string(dir.join(format!("haproxy-{n}.log"))).unwrap_or_default())
                .collect();
            anyhow::bail!("haproxy did not start: {e}\n{logs}");
        }
    }
    Ok(Chain { entry, procs })
}
