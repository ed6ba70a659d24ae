//! Memory per idle proxied connection: hold N connections open through a path to a backend
//! that accepts and waits, then read the mesh processes' RSS.
use super::peers::{Absent, Mode};
use super::procs::memory_kib;
use super::report::Role;
use anyhow::{bail, Context};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};

/// Idle connections opened at once.
const BATCH: usize = 250;

/// One path's idle figure.
pub struct Idle {
    pub name: &'static str,
    pub role: super::report::Role,
    /// Why this path has no figure (it failed to start or to hold the connections).
    pub failed: Option<String>,
    pub conns: usize,
    pub before_kib: u64,
    pub after_kib: u64,
    /// Weir: how long its admin endpoint took to answer with the connections open.
    pub scrape: Option<String>,
}

pub async fn measure(ca: &weir_identity::Ca, dir: &Path, conns: usize) -> anyhow::Result<Vec<Idle>> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend = listener.local_addr()?;
    let accepted = Arc::new(AtomicUsize::new(0));
    let held = accepted.clone();
    // Each connection is held until its proxy closes it (after its path is measured), so the
    // paths' connections do not pile up against this process's open-file limit.
    let server = tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((mut s, _)) => {
                    held.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let mut buf = [0u8; 64];
                        while let Ok(1..) = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await {}
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
    let mut out = Vec::new();
    let idle_dir = dir.join("idle");
    std::fs::create_dir_all(&idle_dir)?;
    let opts = crate::local_mesh::Options { pin: Some(super::PROXY_CPU), ktls_off: true, ..Default::default() };
    let mesh = crate::local_mesh::Mesh::start_with(&idle_dir, ca.dir(), backend, opts).await?;
    let name = "weir (userspace TLS)";
    let held = hold(name, mesh.outbound, &mesh.pids(), conns, &accepted, Some(mesh.server_admin)).await;
    out.push(Idle::or_failed(name, Role::Weir, held));
    mesh.stop();
    for peer in super::peers::ALL {
        let name = peer.name(Mode::Tcp);
        let held = match peer.start(&idle_dir, ca, backend, super::PROXY_CPU, Mode::Tcp) {
            Ok(chain) => hold(name, chain.entry, &chain.pids(), conns, &accepted, None).await,
            // Not installed: the hop rows already say so.
            Err(Absent::NotInstalled(_)) => continue,
            Err(Absent::Failed(why)) => Err(anyhow::anyhow!(why)),
        };
        out.push(Idle::or_failed(name, Role::Peer, held));
    }
    server.abort();
    Ok(out)
}

impl Idle {
    fn or_failed(name: &'static str, role: Role, held: anyhow::Result<Idle>) -> Idle {
        held.map(|i| Idle { role, ..i }).unwrap_or_else(|e| Idle {
            name,
            role,
            failed: Some(format!("{e:#}")),
            conns: 0,
            before_kib: 0,
            after_kib: 0,
            scrape: None,
        })
    }
}

async fn hold(
    name: &'static str,
    entry: SocketAddr,
    pids: &[u32],
    conns: usize,
    accepted: &AtomicUsize,
    admin: Option<SocketAddr>,
) -> anyhow::Result<Idle> {
    let rss = || pids.iter().map(|&p| memory_kib(p, "VmRSS")).sum::<u64>();
    let start = accepted.load(Ordering::Relaxed);
    // Warm up (allocator arenas, TLS session setup) so `before` is a steady idle state.
    let warm: Vec<TcpStream> = open(entry, 10).await?;
    wait_accepted(accepted, start, 10).await?;
    drop(warm);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss();
    let base = accepted.load(Ordering::Relaxed);
    // In batches, each through to the backend before the next: thousands of connects at once
    // overflow the proxies' accept and handshake queues (a SYN flood measures drops, not memory).
    let mut streams = Vec::with_capacity(conns);
    while streams.len() < conns {
        let batch = BATCH.min(conns - streams.len());
        streams.extend(open(entry, batch).await?);
        wait_accepted(accepted, base, streams.len())
            .await
            .with_context(|| format!("{} of {conns} idle connections", streams.len()))?;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss();
    let scrape = match admin {
        Some(admin) => Some(scrape_times(admin, conns).await?),
        None => None,
    };
    drop(streams);
    Ok(Idle { name, role: Role::Weir, failed: None, conns, before_kib: before, after_kib: after, scrape })
}

/// The server node's `/metrics` and `/connections` answer times (median of 5) while `conns`
/// connections are open.
async fn scrape_times(admin: SocketAddr, conns: usize) -> anyhow::Result<String> {
    let mut parts = Vec::new();
    for path in ["/metrics", "/connections"] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let started = std::time::Instant::now();
            size = get(admin, path).await?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        parts.push(format!("{path} {:.1} ms ({:.0} KiB)", times[2], size as f64 / 1024.0));
    }
    Ok(format!("with {conns} open connections the server node answered {}", parts.join(", ")))
}

async fn get(admin: SocketAddr, path: &str) -> anyhow::Result<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(admin).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: weir\r\n\r\n").as_bytes()).await?;
    let mut body = Vec::new();
    s.read_to_end(&mut body).await?;
    if !body.starts_with(b"HTTP/1.1 200") && !body.starts_with(b"HTTP/1.0 200") {
        bail!("{admin}{path}: {}", String::from_utf8_lossy(&body[..body.len().min(80)]));
    }
    Ok(body.len())
}

async fn open(entry: SocketAddr, n: usize) -> anyhow::Result<Vec<TcpStream>> {
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        v.push(TcpStream::connect(entry).await.context("open an idle connection")?);
    }
    Ok(v)
}

/// Waits until `want` more connections than `base` reached the backend.
async fn wait_accepted(accepted: &AtomicUsize, base: usize, want: usize) -> anyhow::Result<()> {
    for _ in 0..1200 {
        if accepted.load(Ordering::Relaxed) >= base + want {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = accepted.load(Ordering::Relaxed) - base;
    bail!("only {got} of {want} connections reached the backend in 60 s")
}
