//! `weir bench`: the hop benchmark. Weir's two-node hop against the same two-hop mTLS mesh
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
mod haproxy;
mod http;
mod idle;
mod logs;
mod otlp_sink;
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

/// One bulk measurement.
#[derive(Debug, Clone, Copy)]
struct Run {
    mib_s: f64,
    proxy_cpu_per_gib: f64,
    machine_cpu_per_gib: f64,
}

/// A path under test: where apps connect and which processes are the mesh.
struct Path {
    name: &'static str,
    role: Role,
    entry: SocketAddr,
    pids: Vec<u32>,
    runs: Vec<Run>,
    idle_rss_kib: u64,
    admin: Option<SocketAddr>,
    /// Why this path stopped mid-run (its rows say so instead of giving figures).
    failed: Option<String>,
}

impl Path {
    fn figures(&self, f: fn(&Run) -> f64) -> Figures {
        match &self.failed {
            Some(why) => Figures::none(self.name, self.role, why),
            None => Figures::of(self.name, self.role, self.runs.iter().map(f).collect()),
        }
    }
}

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

    let mesh = crate::local_mesh::Mesh::start(dir.path(), ca.dir(), sink, Some(PROXY_CPU)).await?;
    let mut paths = vec![
        Path {
            name: "direct (no mesh)",
            role: Role::Direct,
            entry: sink,
            pids: vec![],
            runs: vec![],
            idle_rss_kib: 0,
            admin: None,
            failed: None,
        },
        Path {
            name: "weir (userspace TLS)",
            role: Role::Weir,
            entry: mesh.outbound,
            pids: mesh.pids(),
            runs: vec![],
            idle_rss_kib: 0,
            admin: Some(mesh.client_admin),
            failed: None,
        },
    ];
    let mut notes = Vec::new();
    let chain = if procs::installed("haproxy") {
        let chain = haproxy::start(dir.path(), &ca, sink, PROXY_CPU)?;
        paths.push(Path {
            name: HAPROXY,
            role: Role::Peer,
            entry: chain.entry,
            pids: chain.pids(),
            runs: vec![],
            idle_rss_kib: 0,
            admin: None,
            failed: None,
        });
        Some(chain)
    } else {
        notes.push("haproxy: not installed (row omitted)".to_owned());
        None
    };
    if weir_tls::ktls::detect().await.is_available() {
        notes.push(
            "this kernel has kTLS, but the bench host path runs userspace TLS; kTLS speed needs real hardware".into(),
        );
    } else {
        notes.push("kTLS: not in this kernel (CONFIG_TLS): Weir runs userspace TLS here; kTLS is tested functionally in a guest, where speed is meaningless".into());
    }
    for p in &mut paths {
        p.idle_rss_kib = p.pids.iter().map(|&pid| memory_kib(pid, "VmRSS")).sum();
    }
    let userspace_before = weir_userspace_bytes(&paths).await;
    for rep in 0..args.reps {
        for p in paths.iter_mut().filter(|p| p.failed.is_none()) {
            match bulk(p, args.mib) {
                Ok(r) => p.runs.push(r),
                Err(e) => p.failed = Some(format!("failed in rep {rep}: {e:#}")),
            }
        }
    }
    let userspace = weir_userspace_bytes(&paths).await - userspace_before;
    let idle = idle::measure(&ca, dir.path(), args.idle_conns).await?;
    notes.extend(idle.iter().filter_map(|i| i.scrape.as_ref().map(|s| format!("{}: {s}", i.name))));
    let haproxy_missing = chain.is_none();
    drop(chain);
    mesh.stop();
    Ok(Section {
        markdown: report(args, &paths, userspace, &idle, &notes),
        rows: rows(args, &paths, userspace, &idle, haproxy_missing),
        notes,
    })
}

/// The haproxy chain's name in the hop tables.
const HAPROXY: &str = "haproxy x2 (mTLS, splice)";

/// The hop scenario's figures as rows; haproxy's say "not installed" when it is missing.
fn rows(args: &BenchArgs, paths: &[Path], userspace: f64, idle: &[idle::Idle], haproxy_missing: bool) -> Vec<Row> {
    let missing = || haproxy_missing.then(|| Figures::none(HAPROXY, Role::Peer, "not installed: `make setup`"));
    let bulk = format!("{} MiB bulk (iperf3)", args.mib);
    let metric = |load: &str, name, unit, better| Metric { scenario: "hop", load: load.to_owned(), name, unit, better };
    let runs = |f: fn(&Run) -> f64, proxied_only: bool| -> Vec<Figures> {
        let measured = paths.iter().filter(|p| !proxied_only || !p.pids.is_empty());
        measured.map(|p| p.figures(f)).chain(missing()).collect()
    };
    let mut rows = metric(&bulk, "throughput", "MiB/s", Better::Higher).rows(runs(|r| r.mib_s, false));
    rows.extend(metric(&bulk, "proxy CPU", "s/GiB", Better::Lower).rows(runs(|r| r.proxy_cpu_per_gib, true)));
    rows.extend(metric(&bulk, "machine CPU", "s/GiB", Better::Lower).rows(runs(|r| r.machine_cpu_per_gib, false)));
    let rss = paths.iter().filter(|p| !p.pids.is_empty());
    let rss = rss.map(|p| Figures::of(p.name, p.role, vec![p.idle_rss_kib as f64 / 1024.0])).chain(missing());
    rows.extend(metric(&bulk, "mesh RSS at start", "MiB", Better::Lower).rows(rss.collect()));
    let moved = (args.mib * args.reps as u64) as f64 * (1 << 20) as f64;
    let weir = paths.iter().filter(|p| p.role == Role::Weir);
    let weir = weir.map(|p| Figures::of(p.name, p.role, vec![userspace / moved.max(1.0)])).collect();
    rows.extend(metric(&bulk, "payload through userspace", "× bytes moved", Better::Lower).rows(weir));
    let per_conn = idle.iter().map(|i| {
        let role = if i.name == HAPROXY { Role::Peer } else { Role::Weir };
        Figures::of(i.name, role, vec![i.after_kib.saturating_sub(i.before_kib) as f64 / i.conns.max(1) as f64])
    });
    let load = format!("{} idle connections", args.idle_conns);
    rows.extend(
        metric(&load, "memory per idle connection", "KiB", Better::Lower).rows(per_conn.chain(missing()).collect()),
    );
    rows
}

async fn weir_userspace_bytes(paths: &[Path]) -> f64 {
    let Some(admin) = paths.iter().find_map(|p| p.admin) else { return 0.0 };
    let text = crate::demo::traffic::get_text(admin, "/metrics").await.map(|(_, t)| t).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("weir_userspace_bytes_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// One iperf3 transfer of `mib` through `p`. The iperf3 server serves one test at a time and
/// takes a moment to clear a previous one (including the bare connect that proved it was
/// listening): a refusal of the control connection is retried, a real failure is not.
fn bulk(p: &Path, mib: u64) -> anyhow::Result<Run> {
    let mut tries = 0;
    loop {
        match bulk_once(p, mib) {
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

fn bulk_once(p: &Path, mib: u64) -> anyhow::Result<Run> {
    let cpu0: f64 = p.pids.iter().map(|&pid| cpu_seconds(pid)).sum();
    let machine0 = machine_busy_seconds();
    let out = std::process::Command::new("taskset")
        .args([
            "-c",
            CLIENT_CPU,
            "iperf3",
            "-c",
            "127.0.0.1",
            "-p",
            &p.entry.port().to_string(),
            "-n",
            &format!("{mib}M"),
            "-J",
        ])
        .output()
        .context("run iperf3")?;
    let cpu = p.pids.iter().map(|&pid| cpu_seconds(pid)).sum::<f64>() - cpu0;
    let machine = machine_busy_seconds() - machine0;
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).context("iperf3 JSON")?;
    if let Some(err) = json["error"].as_str() {
        bail!("iperf3: {err}");
    }
    let bytes = json["end"]["sum_received"]["bytes"].as_f64().context("iperf3 received bytes")?;
    let secs = json["end"]["sum_received"]["seconds"].as_f64().context("iperf3 seconds")?;
    let gib = bytes / (1u64 << 30) as f64;
    Ok(Run { mib_s: bytes / (1 << 20) as f64 / secs, proxy_cpu_per_gib: cpu / gib, machine_cpu_per_gib: machine / gib })
}

fn median(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let (lo, hi) = (v.first().copied().unwrap_or(0.0), v.last().copied().unwrap_or(0.0));
    (v.get(v.len() / 2).copied().unwrap_or(0.0), lo, hi)
}

fn report(args: &BenchArgs, paths: &[Path], userspace: f64, idle: &[idle::Idle], notes: &[String]) -> String {
    let mut t = String::new();
    let stat = |p: &Path, f: fn(&Run) -> f64| median(p.runs.iter().map(f).collect());
    let haproxy = paths.iter().find(|p| p.name.starts_with("haproxy"));
    let direct = &paths[0];
    let _ = writeln!(t, "\n## Hop benchmark: {} MiB bulk (iperf3), {} interleaved reps, proxies pinned to CPU {PROXY_CPU}, iperf3 to CPU {CLIENT_CPU}\n", args.mib, args.reps);
    let _ = writeln!(t, "| path | MiB/s median (min–max) | × direct | × haproxy | proxy CPU s/GiB (min–max) | × haproxy | machine CPU s/GiB | idle RSS of the mesh |");
    let _ = writeln!(t, "|---|---|---|---|---|---|---|---|");
    for p in paths {
        if let Some(why) = &p.failed {
            let _ = writeln!(t, "| {} | {why} | | | | | | |", p.name);
            continue;
        }
        let (thr, tlo, thi) = stat(p, |r| r.mib_s);
        let (cpu, clo, chi) = stat(p, |r| r.proxy_cpu_per_gib);
        let (mach, _, _) = stat(p, |r| r.machine_cpu_per_gib);
        let ratio =
            |a: f64, b: Option<f64>| b.filter(|b| *b > 0.0).map_or("–".to_owned(), |b| format!("{:.2}", a / b));
        let _ = writeln!(
            t,
            "| {} | {thr:.0} ({tlo:.0}–{thi:.0}) | {} | {} | {} | {} | {mach:.2} | {} |",
            p.name,
            ratio(thr, Some(stat(direct, |r| r.mib_s).0)),
            ratio(thr, haproxy.map(|h| stat(h, |r| r.mib_s).0)),
            if p.pids.is_empty() { "–".to_owned() } else { format!("{cpu:.2} ({clo:.2}–{chi:.2})") },
            if p.pids.is_empty() {
                "–".to_owned()
            } else {
                ratio(cpu, haproxy.map(|h| stat(h, |r| r.proxy_cpu_per_gib).0))
            },
            if p.pids.is_empty() {
                "–".to_owned()
            } else {
                format!("{:.1} MiB ({} processes)", p.idle_rss_kib as f64 / 1024.0, p.pids.len())
            },
        );
    }
    let moved = (args.mib * args.reps as u64) as f64 * (1 << 20) as f64;
    let _ = writeln!(t, "\nWeir payload bytes through userspace during the bulk runs (client node): {userspace:.0} = {:.2} × the bytes moved (userspace TLS must copy; the kTLS path is 0)", userspace / moved.max(1.0));
    let _ = writeln!(t, "\n| path | idle connections held | mesh RSS before | after | per idle connection |");
    let _ = writeln!(t, "|---|---|---|---|---|");
    for i in idle {
        let _ = writeln!(
            t,
            "| {} | {} | {:.1} MiB | {:.1} MiB | {:.1} KiB |",
            i.name,
            i.conns,
            i.before_kib as f64 / 1024.0,
            i.after_kib as f64 / 1024.0,
            (i.after_kib.saturating_sub(i.before_kib)) as f64 / i.conns.max(1) as f64
        );
    }
    for n in notes {
        let _ = writeln!(t, "\nnote: {n}");
    }
    t
}
