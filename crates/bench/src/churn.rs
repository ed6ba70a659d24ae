//! `weir bench --scenario churn`: what a mesh pays per new connection. Weir's own load
//! generator (a tokio loop, [`WORKERS`] concurrent workers) repeatedly connects, writes 16 bytes,
//! reads the 16-byte echo and closes, for `secs` per run, directly to an in-process echo server,
//! through the two-node mesh (L4 service, default config, as in the hop scenario) and through the
//! reference meshes (haproxy, nginx, Envoy; byte-stream mode, see `peers`). Paths are interleaved per repetition; figures: new
//! connections per second, p50/p99 connect + exchange latency, proxy CPU per 1000 connections.
use super::peers::{self, Mode};
use super::procs::{cpu_busy_seconds, cpu_seconds};
use super::report::{Better, Figures, Metric, Role, Row, Section, P50, P99};
use super::{median, CLIENT_CPU, PROXY_CPU};
use anyhow::Context;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Concurrent connecting workers.
const WORKERS: usize = 8;
/// Bytes written and echoed per connection.
const MSG: usize = 16;
/// Longest one connection may take before the run counts it as failed.
const CONN_TIMEOUT: Duration = Duration::from_secs(5);

/// One run through one path.
struct Sample {
    cps: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_ms_per_1000: f64,
    /// Busy share of the proxies' CPU over the run.
    busy_proxy: f64,
}

/// A path under test: its entry (or why it has none), its proxy processes, its runs.
struct Target {
    name: &'static str,
    role: Role,
    entry: Result<SocketAddr, String>,
    pids: Vec<u32>,
    runs: Vec<Sample>,
}

/// Runs the scenario: `secs` per run, `reps` interleaved repetitions, load generator and echo
/// backend on their own thread (one tokio runtime) pinned to [`CLIENT_CPU`].
pub fn run(secs: u64, reps: usize) -> anyhow::Result<Section> {
    let pinned = std::thread::spawn(move || {
        let tid = std::fs::read_link("/proc/thread-self")?;
        let tid = tid.file_name().context("thread id")?.to_string_lossy().into_owned();
        let out = std::process::Command::new("taskset").args(["-pc", CLIENT_CPU, &tid]).output()?;
        anyhow::ensure!(out.status.success(), "taskset: {}", String::from_utf8_lossy(&out.stderr));
        tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(scenario(secs, reps))
    });
    pinned.join().map_err(|_| anyhow::anyhow!("the churn thread panicked"))?
}

async fn scenario(secs: u64, reps: usize) -> anyhow::Result<Section> {
    let dir = tempfile::Builder::new().prefix("weir-bench-churn.").tempdir()?;
    let ca = weir_identity::Ca::init(&dir.path().join("ca"), "weir.local")?;
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let backend = listener.local_addr()?;
    let server = tokio::spawn(echo_server(listener));
    let mut notes = vec![format!(
        "load generator: Weir's own client ({WORKERS} tokio tasks, each connect → write {MSG} B → read the \
         {MSG} B echo → close); it and the echo backend share one thread pinned to CPU {CLIENT_CPU}"
    )];
    let target = |name, role, entry, pids| Target { name, role, entry, pids, runs: Vec::new() };
    let mut targets = vec![target("direct (no mesh)", Role::Direct, Ok(backend), vec![])];
    let mesh_dir = dir.path().join("weir");
    std::fs::create_dir_all(&mesh_dir)?;
    let mesh = crate::local_mesh::Mesh::start(&mesh_dir, ca.dir(), backend, Some(PROXY_CPU)).await;
    let (entry, pids) = match &mesh {
        Ok(m) => (Ok(m.outbound), m.pids()),
        Err(e) => (Err(format!("failed to start: {e:#}")), vec![]),
    };
    targets.push(target("weir (userspace TLS)", Role::Weir, entry, pids));
    let mut chains = Vec::new();
    for peer in peers::ALL {
        let (entry, pids) = match peer.start(dir.path(), &ca, backend, PROXY_CPU, Mode::Tcp) {
            Ok(c) => {
                let started = (Ok(c.entry), c.pids());
                chains.push(c);
                started
            }
            Err(absent) => (Err(absent.reason()), vec![]),
        };
        targets.push(target(peer.name(Mode::Tcp), Role::Peer, entry, pids));
    }
    // Warm-up, not measured: every path must echo before it is measured.
    for t in &mut targets {
        let Ok(entry) = t.entry else { continue };
        if let Err(e) = churn(entry, Duration::from_millis(500)).await {
            t.entry = Err(format!("failed in warm-up: {e:#}"));
        }
    }
    for rep in 1..=reps {
        for t in &mut targets {
            let Ok(entry) = t.entry else { continue };
            match measure(entry, &t.pids, secs).await {
                Ok((sample, errors)) => {
                    if errors > 0 {
                        notes.push(format!("{} (rep {rep}): {errors} connections failed or timed out", t.name));
                    }
                    t.runs.push(sample);
                }
                Err(e) => t.entry = Err(format!("failed in rep {rep}: {e:#}")),
            }
        }
    }
    for t in targets.iter().filter(|t| t.entry.is_ok()) {
        let busy = median(t.runs.iter().map(|s| s.busy_proxy * 100.0).collect()).0;
        notes.push(format!("{}: CPU {PROXY_CPU} (the proxies') {busy:.0} % busy during the runs", t.name));
    }
    drop(chains);
    if let Ok(mesh) = mesh {
        mesh.stop();
    }
    server.abort();
    let rows = rows(secs, &targets);
    Ok(Section { markdown: markdown(secs, reps, &rows, &notes), rows, notes })
}

/// Accepts connections and echoes what each sends until it closes.
async fn echo_server(listener: TcpListener) {
    while let Ok((mut s, _)) = listener.accept().await {
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = s.read(&mut buf).await {
                if s.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// One timed run through `entry`, with the CPU the proxy processes `pids` spent on it; also
/// how many connections failed.
async fn measure(entry: SocketAddr, pids: &[u32], secs: u64) -> anyhow::Result<(Sample, usize)> {
    let cpu = || pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();
    let (cpu0, busy0) = (cpu(), cpu_busy_seconds(PROXY_CPU));
    let started = Instant::now();
    let (mut lat, errors) = churn(entry, Duration::from_secs(secs)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let (cpu_s, busy_proxy) = (cpu() - cpu0, (cpu_busy_seconds(PROXY_CPU) - busy0) / elapsed);
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0;
    let n = lat.len() as f64;
    let (p50_ms, p99_ms, cpu_ms_per_1000) = (pct(0.5), pct(0.99), cpu_s * 1e6 / n);
    let sample = Sample { cps: n / elapsed, p50_ms, p99_ms, cpu_ms_per_1000, busy_proxy };
    Ok((sample, errors))
}

/// [`WORKERS`] workers through `entry` for `span`: latencies (µs) of the connections that
/// completed, and how many failed. Fails if none completed.
async fn churn(entry: SocketAddr, span: Duration) -> anyhow::Result<(Vec<u64>, usize)> {
    let deadline = Instant::now() + span;
    let workers = (0..WORKERS).map(|_| {
        tokio::spawn(async move {
            let (mut lat, mut errors, mut last_err) = (Vec::new(), 0usize, None);
            while Instant::now() < deadline {
                let t0 = Instant::now();
                match tokio::time::timeout(CONN_TIMEOUT, exchange(entry)).await {
                    Ok(Ok(())) => lat.push(t0.elapsed().as_micros() as u64),
                    Ok(Err(e)) => (errors, last_err) = (errors + 1, Some(format!("{e:#}"))),
                    Err(_) => (errors, last_err) = (errors + 1, Some("timed out".to_owned())),
                }
            }
            (lat, errors, last_err)
        })
    });
    let (mut all, mut errors, mut last_err) = (Vec::new(), 0, None);
    for w in workers.collect::<Vec<_>>() {
        let (lat, e, last) = w.await?;
        all.extend(lat);
        errors += e;
        last_err = last_err.or(last);
    }
    if all.is_empty() {
        anyhow::bail!("no connection completed ({errors} failed, last: {})", last_err.unwrap_or_default());
    }
    Ok((all, errors))
}

/// One connection: connect, write [`MSG`] bytes, read them back, close.
async fn exchange(entry: SocketAddr) -> anyhow::Result<()> {
    let mut s = TcpStream::connect(entry).await.context("connect")?;
    s.set_nodelay(true)?;
    let msg = [0x5au8; MSG];
    s.write_all(&msg).await.context("write")?;
    let mut back = [0u8; MSG];
    s.read_exact(&mut back).await.context("read the echo")?;
    anyhow::ensure!(back == msg, "echo differs");
    Ok(())
}

/// The figures as rows; costs for proxied paths only; a path without figures says why.
fn rows(secs: u64, targets: &[Target]) -> Vec<Row> {
    let load = format!("{WORKERS} workers × {secs} s, {MSG} B echo per connection");
    let metric = |name, unit, better| Metric { scenario: "churn", load: load.clone(), name, unit, better };
    let figures = |f: fn(&Sample) -> f64, proxied_only: bool| -> Vec<Figures> {
        let paths = targets.iter().filter(|t| !proxied_only || t.role != Role::Direct);
        let paths = paths.map(|t| match &t.entry {
            Err(why) => Figures::none(t.name, t.role, why),
            Ok(_) => Figures::of(t.name, t.role, t.runs.iter().map(f).collect()),
        });
        paths.collect()
    };
    let mut rows = metric("connections/s", "conn/s", Better::Higher).rows(figures(|s| s.cps, false));
    rows.extend(metric(P50, "ms", Better::Lower).rows(figures(|s| s.p50_ms, false)));
    rows.extend(metric(P99, "ms", Better::Lower).rows(figures(|s| s.p99_ms, false)));
    rows.extend(metric("proxy CPU", "ms / 1000 conns", Better::Lower).rows(figures(|s| s.cpu_ms_per_1000, true)));
    rows
}

/// The table, one line per path, from the rows.
fn markdown(secs: u64, reps: usize, rows: &[Row], notes: &[String]) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n## Connection churn: {WORKERS} workers, new connection per {MSG} B echo, {secs} s × {reps} interleaved reps, proxies pinned to CPU {PROXY_CPU}\n");
    let _ = writeln!(t, "| path | conn/s median (min–max) | × direct | × best peer | p50 ms | p99 ms | proxy CPU ms / 1000 conns (min–max) | × best peer |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    let find = |path: &str, metric: &str| rows.iter().find(|r| r.path == path && r.metric == metric);
    let opt = super::report::cell;
    let range = |r: Option<&Row>, d: usize| super::report::median_cell(r, d, true);
    for r in rows.iter().filter(|r| r.metric == "connections/s") {
        if let Some(why) = &r.reason {
            let _ = writeln!(t, "| {} | {why} | | | | | | |", r.path);
            continue;
        }
        let cpu = find(&r.path, "proxy CPU");
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} |",
            r.path,
            range(Some(r), 0),
            opt(r.ratio_direct, 2),
            opt(r.ratio_peer, 2),
            opt(find(&r.path, P50).and_then(|r| r.median), 3),
            opt(find(&r.path, P99).and_then(|r| r.median), 3),
            range(cpu, 1),
            opt(cpu.and_then(|r| r.ratio_peer), 2),
        );
    }
    for n in notes {
        let _ = writeln!(t, "\nnote: {n}");
    }
    t
}
