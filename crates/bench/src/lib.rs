//! `weir bench`: the hop benchmark, a library the `weir` binary calls (it relaunches the
//! binary itself, `current_exe()`, for the nodes it measures). Also the local two-node mesh
//! ([`local_mesh`]) and the HTTP client ([`http_client`]) the demo and the CLI share.
//!
//! The hop benchmark: Weir's two-node hop against the same two-hop mTLS mesh
//! built from haproxy, and against no mesh at all, side by side in one run, on this machine.
//!
//! Bulk: iperf3 (a real load generator) sends N GiB through each path; client and server are
//! pinned to CPU 0, the proxies to CPU 1; runs are interleaved (A B C A B C …) and reported as
//! medians with min–max and as ratios to the other paths of the same run. Idle: N idle
//! connections held open through each path, memory per connection from the proxies' RSS.
//! L7 (`--scenario http`, in `http.rs`): wrk against nginx directly, through the mesh with an
//! HTTP inbound service (splice and copy mode) and through two haproxy processes in `mode http`.
//! Churn (`--scenario churn`, in `churn.rs`): new connections per second, one tiny echo each.
//! Figures only: nothing here asserts a speed. `--out DIR` also writes every figure as data
//! (`report.json`) and as charts (`report.html`), see `report.rs`.
mod charts;
mod churn;
pub mod connect;
mod http;
pub mod http_client;
mod idle;
pub mod local_mesh;
mod logs;
mod otlp_sink;
mod peers;
mod procs;
mod report;
mod wrk;

use anyhow::{bail, Context};
use procs::{cpu_seconds, machine_busy_seconds, memory_kib, Proc};
use report::{Better, Figures, Metric, Role, Row, Section};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

const CLIENT_CPU: &str = "0";
const PROXY_CPU: &str = "1";

/// Options of `weir bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Bytes per bulk run, MiB.
    #[arg(long, default_value_t = 1024)]
    pub mib: u64,
    /// Interleaved repetitions of every path.
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// Idle connections held open per path for the memory figure (capped by the open-file
    /// limit: each proxied connection costs a mesh node two descriptors).
    #[arg(long, default_value_t = 10_000)]
    pub idle_conns: usize,
    /// Smoke run: 256 MiB, 1 repetition, 1000 idle connections, fewer connects, 4 s wrk runs,
    /// 3 s churn runs.
    #[arg(long)]
    pub quick: bool,
    /// What to measure.
    #[arg(long, value_enum, default_value = "all")]
    pub scenario: Scenario,
    /// Also write every figure to DIR/report.json and as charts to DIR/report.html.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Benchmark scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scenario {
    /// Everything below.
    All,
    /// Bulk and idle through the mesh hop vs haproxy vs direct.
    Hop,
    /// connect() latency with the kernel path attached vs not (needs root).
    Connect,
    /// HTTP/1.1 through the mesh (inbound `protocol = "http"`, splice and copy mode) vs a
    /// two-haproxy chain in `mode http` vs direct: wrk against nginx.
    Http,
    /// New connections per second (connect, 16-byte echo, close) through the mesh vs the
    /// haproxy chain vs direct.
    Churn,
}

pub(crate) fn free_port() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

pub(crate) fn wait_listening(addr: SocketAddr) -> anyhow::Result<()> {
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("nothing listening on {addr} after 5 s")
}

/// Parallel iperf3 streams of the bulk loads.
const STREAMS: [u32; 2] = [1, 8];

/// One bulk measurement.
#[derive(Debug, Clone, Copy)]
struct Run {
    streams: u32,
    mib_s: f64,
    proxy_cpu_per_gib: f64,
    /// The mesh processes on the app's host: Weir's client node, or the host plane (whose DPU
    /// would have cores of its own).
    host_cpu_per_gib: f64,
    machine_cpu_per_gib: f64,
}

/// A path under test: where apps connect and which processes are the mesh.
struct Path {
    name: &'static str,
    role: Role,
    entry: SocketAddr,
    pids: Vec<u32>,
    /// Of `pids`, those on the app's host (see [`Run::host_cpu_per_gib`]); empty for peers.
    host_pids: Vec<u32>,
    /// The host plane's config and the workload iperf3 runs in (`weir exec`), when the path
    /// is the host plane's capture.
    workload: Option<(PathBuf, &'static str)>,
    runs: Vec<Run>,
    idle_rss_kib: u64,
    admin: Option<SocketAddr>,
    /// Payload bytes the client node moved through userspace during the bulk runs.
    userspace_bytes: f64,
    /// Why this path stopped mid-run (its rows say so instead of giving figures).
    failed: Option<String>,
}

impl Path {
    fn new(name: &'static str, role: Role, entry: SocketAddr, pids: Vec<u32>) -> Self {
        Self {
            name,
            role,
            entry,
            pids,
            host_pids: vec![],
            workload: None,
            runs: vec![],
            idle_rss_kib: 0,
            admin: None,
            userspace_bytes: 0.0,
            failed: None,
        }
    }

    /// `f` of the runs with `streams` parallel streams.
    fn figures(&self, streams: u32, f: fn(&Run) -> f64) -> Figures {
        match &self.failed {
            Some(why) => Figures::none(self.name, self.role, why),
            None => {
                let runs = self.runs.iter().filter(|r| r.streams == streams);
                Figures::of(self.name, self.role, runs.map(f).collect())
            }
        }
    }
}

/// Runs `weir bench`: the scenarios `args` names, tables on stdout, data and charts in `--out`.
pub fn run(mut args: BenchArgs) -> anyhow::Result<()> {
    if args.quick {
        (args.mib, args.reps, args.idle_conns) = (256, 1, 1000);
    }
    let hop = matches!(args.scenario, Scenario::All | Scenario::Hop);
    for tool in ["iperf3", "taskset"] {
        if (hop || tool == "taskset") && !procs::installed(tool) {
            bail!("{tool} is not installed: run `make setup`");
        }
    }
    let nofile = weir_app::raise_fd_limit().context("raise the open-file limit")?;
    // A node holds two descriptors per proxied connection; haproxy reserves 2.5 per maxconn
    // (its config caps at 7900 so it starts under a 20000 limit, and it stopped accepting near 4400
    // held TLS connections there).
    let fit = ((nofile.saturating_sub(250) * 2 / 5) as usize).min(5000);
    if hop && args.idle_conns > fit {
        eprintln!("note: {} idle connections need more descriptors per proxy process than the open-file limit here ({nofile}) allows: measuring {fit}", args.idle_conns);
        args.idle_conns = fit;
    }
    let connects = if args.quick { 2000 } else { 20_000 };
    // Per wrk run; 4 paths × 2 loads × reps runs, plus a 1 s warm-up per path.
    let wrk_secs = if args.quick { 4 } else { 10 };
    let connect_reps = args.reps.max(3);
    let churn_secs = if args.quick { 3 } else { 8 };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let mut results = report::Report::new(report::Settings {
        quick: args.quick,
        reps: args.reps,
        scenario: format!("{:?}", args.scenario).to_lowercase(),
        bulk_mib: args.mib,
        idle_conns: args.idle_conns,
        wrk_secs,
        connects,
        connect_reps,
        churn_secs,
    });
    let outcome = (|| {
        if hop {
            results.scenario("hop", || rt.block_on(bench(&args)))?;
        }
        if matches!(args.scenario, Scenario::All | Scenario::Http) {
            results.scenario("http", || rt.block_on(http::run(wrk_secs, args.reps)))?;
        }
        if matches!(args.scenario, Scenario::All | Scenario::Connect) {
            results.scenario("connect", || connect::run(connect_reps, connects))?;
        }
        if matches!(args.scenario, Scenario::All | Scenario::Churn) {
            results.scenario("churn", || churn::run(churn_secs, args.reps))?;
        }
        anyhow::Ok(())
    })();
    // A failed scenario still leaves a report: what ran before it, and its error.
    if let Some(dir) = &args.out {
        match results.write(dir) {
            Ok(()) => eprintln!("report: {} and report.html", dir.join("report.json").display()),
            Err(e) if outcome.is_ok() => return Err(e),
            Err(e) => eprintln!("no report written: {e:#}"),
        }
    }
    outcome
}

async fn bench(args: &BenchArgs) -> anyhow::Result<Section> {
    let dir = tempfile::Builder::new().prefix("weir-bench.").tempdir()?;
    let ca = weir_identity::Ca::init(&dir.path().join("ca"), "weir.local")?;
    let sink = free_port()?;
    let port = sink.port().to_string();
    let _iperf =
        Proc::pinned(CLIENT_CPU, "iperf3", &["-s", "-B", "127.0.0.1", "-p", &port], &dir.path().join("iperf3.log"))?;
    wait_listening(sink)?;

    let mut paths = vec![Path::new("direct (no mesh)", Role::Direct, sink, vec![])];
    // Paths that cannot run here: their rows say why.
    let mut absent: Vec<(&'static str, Role, String)> = Vec::new();
    let mut meshes = Vec::new();
    let ktls = weir_tls::ktls::detect().await.is_available();
    for (name, ktls_off) in [("weir (userspace TLS)", true), ("weir (kTLS)", false)] {
        if !ktls_off && !ktls {
            absent.push((
                name,
                Role::Weir,
                "this kernel has no kTLS (CONFIG_TLS); tested functionally in a guest".into(),
            ));
            continue;
        }
        let mesh_dir = dir.path().join(if ktls_off { "weir-userspace" } else { "weir-ktls" });
        std::fs::create_dir_all(&mesh_dir)?;
        let opts = crate::local_mesh::Options { pin: Some(PROXY_CPU), ktls_off, ..Default::default() };
        let mesh = crate::local_mesh::Mesh::start_with(&mesh_dir, ca.dir(), sink, opts).await?;
        let mut weir = Path::new(name, Role::Weir, mesh.outbound, mesh.pids());
        weir.admin = Some(mesh.client_admin);
        weir.host_pids = mesh.app_side_pid().into_iter().collect();
        paths.push(weir);
        meshes.push(mesh);
    }
    // The app's host keeps the kernel path and splices plaintext to its DPU, which does the
    // TLS: what the host itself pays per byte. Here the DPU shares this machine's CPUs.
    let planes_dir = dir.path().join("weir-planes");
    std::fs::create_dir_all(&planes_dir)?;
    let opts = crate::local_mesh::Options { pin: Some(PROXY_CPU), ktls_off: true, ..Default::default() };
    match crate::local_mesh::Mesh::start_planes(&planes_dir, ca.dir(), sink, opts).await {
        Ok(mesh) => {
            let mut planes = Path::new(PLANES, Role::Weir, mesh.outbound, mesh.pids());
            planes.admin = Some(mesh.client_admin);
            planes.host_pids = mesh.app_side_pid().into_iter().collect();
            planes.workload = mesh.workload.clone();
            paths.push(planes);
            meshes.push(mesh);
        }
        Err(e) => {
            let log = std::fs::read_to_string(planes_dir.join("host.log")).unwrap_or_default();
            let last = log.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
            absent.push((PLANES, Role::Weir, format!("{e:#} {last}").trim().to_owned()));
        }
    }
    let mut chains = Vec::new();
    for peer in peers::ALL {
        let name = peer.name(peers::Mode::Tcp);
        match peer.start(dir.path(), &ca, sink, PROXY_CPU, peers::Mode::Tcp) {
            Ok(chain) => {
                paths.push(Path::new(name, Role::Peer, chain.entry, chain.pids()));
                chains.push(chain);
            }
            Err(why) => absent.push((name, Role::Peer, why.reason())),
        }
    }
    let mut notes = Vec::new();
    for p in &mut paths {
        p.idle_rss_kib = p.pids.iter().map(|&pid| memory_kib(pid, "VmRSS")).sum();
    }
    for p in &mut paths {
        p.userspace_bytes = -userspace_bytes(p.admin).await;
    }
    for rep in 0..args.reps {
        for streams in STREAMS {
            for p in paths.iter_mut().filter(|p| p.failed.is_none()) {
                match bulk(p, args.mib, streams) {
                    Ok(r) => p.runs.push(r),
                    Err(e) => p.failed = Some(format!("failed in rep {rep} ({streams} streams): {e:#}")),
                }
            }
        }
    }
    for p in &mut paths {
        p.userspace_bytes += userspace_bytes(p.admin).await;
    }
    drop(chains);
    meshes.into_iter().for_each(crate::local_mesh::Mesh::stop);
    let idle = idle::measure(&ca, dir.path(), args.idle_conns).await?;
    notes.extend(idle.iter().filter_map(|i| i.scrape.as_ref().map(|s| format!("{}: {s}", i.name))));
    let rows = rows(args, &paths, &idle, &absent);
    Ok(Section { markdown: report(args, &rows, &notes), rows, notes })
}

/// The hop scenario's figures as rows; a peer that could not run has rows that say why.
fn rows(args: &BenchArgs, paths: &[Path], idle: &[idle::Idle], absent: &[(&'static str, Role, String)]) -> Vec<Row> {
    let missing = || absent.iter().map(|(name, role, why)| Figures::none(name, *role, why));
    let metric = |load: &str, name, unit, better| Metric { scenario: "hop", load: load.to_owned(), name, unit, better };
    let mut rows = Vec::new();
    for streams in STREAMS {
        let bulk = bulk_load(args.mib, streams);
        let runs = |f: fn(&Run) -> f64, proxied_only: bool| -> Vec<Figures> {
            let measured = paths.iter().filter(|p| !proxied_only || !p.pids.is_empty());
            measured.map(|p| p.figures(streams, f)).chain(missing()).collect()
        };
        rows.extend(metric(&bulk, THROUGHPUT, "MiB/s", Better::Higher).rows(runs(|r| r.mib_s, false)));
        rows.extend(metric(&bulk, PROXY_CPU_GIB, "s/GiB", Better::Lower).rows(runs(|r| r.proxy_cpu_per_gib, true)));
        rows.extend(
            metric(&bulk, MACHINE_CPU_GIB, "s/GiB", Better::Lower).rows(runs(|r| r.machine_cpu_per_gib, false)),
        );
        let on_host =
            paths.iter().filter(|p| !p.host_pids.is_empty()).map(|p| p.figures(streams, |r| r.host_cpu_per_gib));
        let absent_weir = absent.iter().filter(|(_, role, _)| *role == Role::Weir);
        let on_host = on_host.chain(absent_weir.map(|(name, role, why)| Figures::none(name, *role, why)));
        rows.extend(metric(&bulk, HOST_CPU_GIB, "s/GiB", Better::Lower).rows(on_host.collect()));
    }
    let bulk = bulk_load(args.mib, STREAMS[0]);
    let rss = paths.iter().filter(|p| !p.pids.is_empty());
    let rss = rss.map(|p| Figures::of(p.name, p.role, vec![p.idle_rss_kib as f64 / 1024.0])).chain(missing());
    rows.extend(metric(&bulk, RSS_AT_START, "MiB", Better::Lower).rows(rss.collect()));
    let moved = (args.mib * (args.reps * STREAMS.len()) as u64) as f64 * (1 << 20) as f64;
    let weir = paths.iter().filter(|p| p.role == Role::Weir);
    let weir = weir.map(|p| Figures::of(p.name, p.role, vec![p.userspace_bytes / moved.max(1.0)])).collect();
    rows.extend(metric(&bulk, USERSPACE, "× bytes moved", Better::Lower).rows(weir));
    let per_conn = idle.iter().map(|i| match &i.failed {
        Some(why) => Figures::none(i.name, i.role, why),
        None => {
            Figures::of(i.name, i.role, vec![i.after_kib.saturating_sub(i.before_kib) as f64 / i.conns.max(1) as f64])
        }
    });
    let load = format!("{} idle connections", args.idle_conns);
    rows.extend(metric(&load, IDLE_MEMORY, "KiB", Better::Lower).rows(per_conn.chain(missing()).collect()));
    rows
}

/// The host/DPU path's name.
const PLANES: &str = "weir host plane + DPU (userspace TLS on the DPU)";
const THROUGHPUT: &str = "throughput";
const PROXY_CPU_GIB: &str = "proxy CPU";
const MACHINE_CPU_GIB: &str = "machine CPU";
const HOST_CPU_GIB: &str = "host-side mesh CPU";
const RSS_AT_START: &str = "mesh RSS at start";
const USERSPACE: &str = "payload through userspace";
const IDLE_MEMORY: &str = "memory per idle connection";

fn bulk_load(mib: u64, streams: u32) -> String {
    match streams {
        1 => format!("{mib} MiB bulk (iperf3, 1 connection)"),
        n => format!("{mib} MiB bulk (iperf3 -P {n}, {n} connections)"),
    }
}

/// The payload bytes a Weir node's pumps moved through userspace so far (0 without a node).
async fn userspace_bytes(admin: Option<SocketAddr>) -> f64 {
    let Some(admin) = admin else { return 0.0 };
    let text = crate::http_client::get_text(admin, "/metrics").await.map(|(_, t)| t).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("weir_userspace_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One iperf3 transfer of `mib` through `p`. The iperf3 server serves one test at a time and
/// takes a moment to clear a previous one (including the bare connect that proved it was
/// listening): a refusal of the control connection is retried, a real failure is not.
fn bulk(p: &Path, mib: u64, streams: u32) -> anyhow::Result<Run> {
    let mut tries = 0;
    loop {
        match bulk_once(p, mib, streams) {
            Err(e) if tries < 5 && transient(&e) => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(300));
            }
            other => return other,
        }
    }
}

fn transient(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    ["unable to receive control message", "server is busy", "unable to connect to server", "unable to send cookie"]
        .iter()
        .any(|t| text.contains(t))
}

fn bulk_once(p: &Path, mib: u64, streams: u32) -> anyhow::Result<Run> {
    let cpu = |pids: &[u32]| pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>();
    let (cpu0, host0) = (cpu(&p.pids), cpu(&p.host_pids));
    let machine0 = machine_busy_seconds();
    let mut command = match &p.workload {
        Some((config, workload)) => {
            let mut c = std::process::Command::new(std::env::current_exe()?);
            c.arg("exec").arg("--config").arg(config).args(["--workload", workload, "--", "taskset"]);
            c
        }
        None => std::process::Command::new("taskset"),
    };
    let out = command
        .args([
            "-c",
            CLIENT_CPU,
            "iperf3",
            "-c",
            &p.entry.ip().to_string(),
            "-p",
            &p.entry.port().to_string(),
            "-n",
            &format!("{mib}M"),
            "-P",
            &streams.to_string(),
            "-J",
        ])
        .output()
        .context("run iperf3")?;
    let (proxies, host) = (cpu(&p.pids) - cpu0, cpu(&p.host_pids) - host0);
    let machine = machine_busy_seconds() - machine0;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let bytes = json["end"]["sum_received"]["bytes"].as_f64().context("iperf3 received bytes")?;
    let secs = json["end"]["sum_received"]["seconds"].as_f64().context("iperf3 seconds")?;
    let gib = bytes / (1u64 << 30) as f64;
    Ok(Run {
        streams,
        mib_s: bytes / (1 << 20) as f64 / secs,
        proxy_cpu_per_gib: proxies / gib,
        host_cpu_per_gib: host / gib,
        machine_cpu_per_gib: machine / gib,
    })
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let (lo, hi) = (v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0));
    (v.get(v.len() / 2).copied().unwrap_or(0.0), lo, hi)
}

/// The hop tables, from the rows: per bulk load one line per path, then idle memory.
fn report(args: &BenchArgs, rows: &[Row], notes: &[String]) -> String {
    let mut t = String::new();
    let find = |load: &str, path: &str, metric: &str| {
        rows.iter().find(|r| r.load == load && r.path == path && r.metric == metric)
    };
    let opt = report::cell;
    let range = |r: Option<&Row>, d: usize| report::median_cell(r, d, args.reps > 1);
    let _ = writeln!(t, "\n## Hop benchmark: {} MiB bulk (iperf3), {} interleaved reps, proxies pinned to CPU {PROXY_CPU}, iperf3 to CPU {CLIENT_CPU}\n", args.mib, args.reps);
    for streams in STREAMS {
        let load = bulk_load(args.mib, streams);
        let _ = writeln!(t, "{load}:\n");
        let _ = writeln!(t, "| path | MiB/s median (min–max) | × direct | × best peer | proxy CPU s/GiB (min–max) | × best peer | machine CPU s/GiB | mesh RSS at start MiB |");
        let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
        for r in rows.iter().filter(|r| r.load == load && r.metric == THROUGHPUT) {
            if let Some(why) = &r.reason {
                let _ = writeln!(t, "| {} | {} | | | | | | |", r.path, why.replace('|', "/").replace('\n', " "));
                continue;
            }
            let cpu = find(&load, &r.path, PROXY_CPU_GIB);
            let rss = find(&bulk_load(args.mib, STREAMS[0]), &r.path, RSS_AT_START);
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                r.path,
                range(Some(r), 0),
                opt(r.ratio_direct, 2),
                opt(r.ratio_peer, 2),
                range(cpu, 2),
                opt(cpu.and_then(|c| c.ratio_peer), 2),
                opt(find(&load, &r.path, MACHINE_CPU_GIB).and_then(|c| c.median), 2),
                opt(rss.and_then(|c| c.median), 1),
            );
        }
        let _ = writeln!(t);
    }
    let _ = writeln!(t, "Host-side mesh CPU: the mesh processes on the app's host (Weir's client node, or the host plane; its DPU shares this machine's CPUs here but is proxy CPU above):\n");
    let _ = writeln!(t, "| load | path | host-side mesh CPU s/GiB (min–max) | × weir (userspace TLS) |");
    let _ = writeln!(t, "|---|---|---|---|");
    for streams in STREAMS {
        let load = bulk_load(args.mib, streams);
        let node = find(&load, "weir (userspace TLS)", HOST_CPU_GIB).and_then(|r| r.median);
        for r in rows.iter().filter(|r| r.load == load && r.metric == HOST_CPU_GIB) {
            let ratio = r.median.zip(node).map(|(m, n)| m / n);
            match &r.reason {
                Some(why) => {
                    _ = writeln!(t, "| {load} | {} | {} | |", r.path, why.replace('|', "/").replace('\n', " "))
                }
                None => _ = writeln!(t, "| {load} | {} | {} | {} |", r.path, range(Some(r), 2), opt(ratio, 2)),
            }
        }
    }
    let _ = writeln!(t);
    for r in rows.iter().filter(|r| r.metric == USERSPACE && r.median.is_some()) {
        let u = r.median.unwrap_or_default();
        let _ = writeln!(t, "{}: payload bytes through userspace during the bulk runs (client node or host plane): {u:.2} × the bytes moved (userspace TLS must copy; the kTLS path and the host plane's splice are 0)\n", r.path);
    }
    let _ = writeln!(t, "| path | memory per idle connection KiB | × best peer |");
    let _ = writeln!(t, "|---|---|---|");
    for r in rows.iter().filter(|r| r.metric == IDLE_MEMORY) {
        match &r.reason {
            Some(why) => _ = writeln!(t, "| {} | {} | |", r.path, why.replace('|', "/").replace('\n', " ")),
            None => _ = writeln!(t, "| {} | {} | {} |", r.path, opt(r.median, 1), opt(r.ratio_peer, 2)),
        }
    }
    for n in notes {
        let _ = writeln!(t, "\nnote: {n}");
    }
    t
}
