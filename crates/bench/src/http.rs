//! `weir bench --scenario http`: the L7 hop. wrk against nginx directly, through the two-node
//! mesh with the inbound service in `protocol = "http"` (one deny rule, so the policy runs on
//! every request head) in splice mode and in copy mode, and through the reference meshes
//! (haproxy, nginx, Envoy: two instances each in HTTP mode with mTLS between them, see
//! `peers`). Two loads: 1 KiB keep-alive requests (rate, p50/p99 latency, proxy CPU per 1000
//! requests) and 1 MiB responses (rate, proxy CPU per request).
//! wrk and nginx are pinned to CPU 0, the proxies to CPU 1; paths are interleaved and reported
//! as medians with min–max. A path that cannot run says why; it never shows as zero.
use super::logs::{first_lines, log_tail, problem_lines_in, read_lines, seconds_of_day, utc_seconds_of_day};
use super::peers::{self, Mode};
use super::procs::{self, cpu_busy_seconds, cpu_seconds, Proc};
use super::report::{Better, Figures, Metric, Role, Row, Section, P50, P99, P999};
use super::wrk::wrk;
use super::{median, CLIENT_CPU, PROXY_CPU};
use crate::local_mesh::{Mesh, Options};
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// One wrk load.
pub(super) struct Load {
    pub(super) name: &'static str,
    pub(super) path: &'static str,
    pub(super) body: u64,
    pub(super) conns: u32,
}

const SMALL: Load = Load { name: "1 KiB", path: "/1k", body: 1024, conns: 32 };
const LARGE: Load = Load { name: "1 MiB", path: "/1m", body: 1 << 20, conns: 8 };

/// The deny rule on the Weir paths: never matched by the load, but evaluated on every head.
const DENIED: &str = "/admin";

/// Weir's nodes run without the per-request access log, like the peers (haproxy without `log`,
/// nginx `access_log off`, Envoy without access loggers); warnings and errors still reach the
/// node logs.
const NODE_LOG: &str = "info,weir::access=off";

/// Median, min and max of a figure.
type Stat = (f64, f64, f64);

/// One wrk run through one path.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    p999_ms: f64,
    requests: f64,
    proxy_cpu_s: f64,
    /// CPU seconds of the first two proxy processes (see `Target::processes`).
    per_process: [f64; 2],
    /// Busy share of the load generator's CPU and of the proxies' CPU over the run.
    busy_client: f64,
    busy_proxy: f64,
}

/// The runs of one load through one path, or why it stopped.
#[derive(Default)]
struct Series {
    runs: Vec<Sample>,
    failed: Option<String>,
}

impl Series {
    /// Median (min, max) of `f` over the runs, `None` if there are none or the path failed.
    fn stat(&self, f: fn(&Sample) -> f64) -> Option<(f64, f64, f64)> {
        (self.failed.is_none() && !self.runs.is_empty()).then(|| median(self.runs.iter().map(f).collect()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Direct,
    Weir,
    Peer,
}

/// A path under test.
struct Target {
    name: &'static str,
    kind: Kind,
    /// Where wrk connects, or why the path has no figures.
    entry: Result<SocketAddr, String>,
    /// The proxy processes whose CPU is counted.
    pids: Vec<u32>,
    /// What the first two of them are.
    processes: [&'static str; 2],
    /// Logs scanned for warnings and errors afterwards.
    logs: Vec<PathBuf>,
    /// The server node's admin endpoint (Weir paths).
    admin: Option<SocketAddr>,
    /// When each wrk run through this path ended (UTC seconds of the day), to tell log lines
    /// about the connections wrk drops when its time is up from the rest.
    run_ends: Vec<f64>,
    small: Series,
    large: Series,
    /// Peak RSS of the proxy processes over the whole scenario (KiB, summed).
    peak_rss_kib: u64,
}

impl Target {
    fn new(name: &'static str, kind: Kind, entry: Result<SocketAddr, String>) -> Self {
        Self {
            name,
            kind,
            entry,
            pids: Vec::new(),
            processes: ["", ""],
            logs: Vec::new(),
            admin: None,
            run_ends: Vec::new(),
            small: Series::default(),
            large: Series::default(),
            peak_rss_kib: 0,
        }
    }

    fn series(&self, load: &Load) -> &Series {
        if load.body == SMALL.body {
            &self.small
        } else {
            &self.large
        }
    }

    fn fail(&mut self, why: String) {
        if self.entry.is_ok() {
            self.entry = Err(format!("failed: {why}"));
        }
    }
}

/// Runs the scenario: `secs` per wrk run, `reps` interleaved repetitions. Returns the report.
pub async fn run(secs: u64, reps: usize) -> anyhow::Result<Section> {
    let dir = tempfile::Builder::new().prefix("weir-bench-http.").tempdir()?;
    let keep = std::env::var_os("WEIR_BENCH_KEEP").is_some();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let ca = weir_identity::Ca::init(&dir.path().join("ca"), "weir.local")?;
    let mut notes = Vec::new();
    let nginx_bin = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .or_else(|| procs::installed("nginx").then_some("nginx"));
    let mut missing: Vec<&str> = Vec::new();
    if nginx_bin.is_none() {
        missing.push("nginx");
    }
    if !procs::installed("wrk") {
        missing.push("wrk");
    }
    let names = [
        ("direct (wrk → nginx)", Kind::Direct),
        ("weir http, splice mode, policy on", Kind::Weir),
        ("weir http, copy mode, policy on", Kind::Weir),
        ("weir http, splice mode, policy on, access log + 1 % spans", Kind::Weir),
    ];
    let names: Vec<(&'static str, Kind)> =
        names.into_iter().chain(peers::ALL.iter().map(|p| (p.name(Mode::Http), Kind::Peer))).collect();
    let nginx_bin = match nginx_bin {
        Some(bin) if missing.is_empty() => bin,
        _ => {
            let why = format!("not installed ({}): `make setup`", missing.join(", "));
            let targets: Vec<Target> = names.iter().map(|&(n, k)| Target::new(n, k, Err(why.clone()))).collect();
            return Ok(section(secs, reps, &targets, notes));
        }
    };

    let mut nginx = match start_nginx(nginx_bin, dir.path()) {
        Ok(n) => n,
        Err(e) => {
            let why = format!("failed: nginx did not start: {e:#}");
            let targets: Vec<Target> = names.iter().map(|&(n, k)| Target::new(n, k, Err(why.clone()))).collect();
            return Ok(section(secs, reps, &targets, notes));
        }
    };
    let backend = nginx.addr;
    let mut targets = vec![Target::new(names[0].0, Kind::Direct, Ok(backend))];
    let mut meshes = Vec::new();
    let sink = super::otlp_sink::Sink::start().await?;
    // The full-telemetry row adds what the others leave off: the per-request access log and
    // request spans to a collector (records, TCP_INFO sampling and metrics run on every row).
    let full = format!("[telemetry]\notlp_endpoint = \"http://{}\"\nspan_sample_ratio = 0.01\n", sink.addr);
    let rows = [("splice", "splice", "", NODE_LOG), ("copy", "copy", "", NODE_LOG), ("full", "splice", &full, "info")];
    for (&(name, kind), (dir_name, mode, telemetry, rust_log)) in names[1..4].iter().zip(rows) {
        let mesh_dir = dir.path().join(format!("weir-{dir_name}"));
        std::fs::create_dir_all(&mesh_dir)?;
        let service = format!(
            "protocol = \"http\"\n[inbound.services.http]\nmode = \"{mode}\"\n\
             [[inbound.services.http.rules]]\naction = \"deny\"\npath_prefix = \"{DENIED}\"\n{telemetry}"
        );
        let opts = Options { pin: Some(PROXY_CPU), service_toml: &service, rust_log: Some(rust_log), ktls_off: false };
        let logs = vec![mesh_dir.join("server.log"), mesh_dir.join("client.log")];
        let mut t = match Mesh::start_with(&mesh_dir, ca.dir(), backend, opts).await {
            Ok(mesh) => {
                let mut t = Target::new(name, kind, Ok(mesh.outbound));
                t.pids = mesh.pids();
                t.processes = ["server node", "client node"];
                t.admin = Some(mesh.server_admin);
                meshes.push(mesh);
                t
            }
            Err(e) => Target::new(name, kind, Err(format!("failed to start: {e:#}{}", log_tail(&logs)))),
        };
        t.logs = logs;
        targets.push(t);
    }
    let mut chains = Vec::new();
    for peer in peers::ALL {
        let name = peer.name(Mode::Http);
        let t = match peer.start(dir.path(), &ca, backend, PROXY_CPU, Mode::Http) {
            Ok(chain) => {
                let mut t = Target::new(name, Kind::Peer, Ok(chain.entry));
                t.pids = chain.pids();
                t.processes = ["A (entry)", "B (to nginx)"];
                t.logs.clone_from(&chain.logs);
                chains.push(chain);
                t
            }
            Err(absent) => Target::new(name, Kind::Peer, Err(absent.reason())),
        };
        targets.push(t);
    }

    // Every path must serve the file before it is measured; the Weir paths must refuse the
    // denied prefix, which shows the policy runs.
    for t in &mut targets {
        let Ok(entry) = t.entry else { continue };
        if let Err(e) = check(entry, t.kind).await {
            t.fail(format!("check before the runs: {e:#}"));
        }
    }
    // Warm-up: connections, TLS sessions, caches. Not measured.
    for t in &mut targets {
        let Ok(entry) = t.entry else { continue };
        if let Err(e) = wrk(entry, &SMALL, 1) {
            t.fail(format!("warm-up: {e:#}"));
        }
        t.run_ends.push(utc_seconds_of_day(SystemTime::now()));
    }
    for rep in 1..=reps {
        for load in [&SMALL, &LARGE] {
            for t in &mut targets {
                let Ok(entry) = t.entry else { continue };
                if t.series(load).failed.is_some() {
                    continue;
                }
                let result = measure(entry, &t.pids, load, secs);
                t.run_ends.push(utc_seconds_of_day(SystemTime::now()));
                let series = if load.body == SMALL.body { &mut t.small } else { &mut t.large };
                match result {
                    Ok((sample, warning)) => {
                        series.runs.push(sample);
                        if let Some(w) = warning {
                            notes.push(format!("{} ({}, rep {rep}): {w}", t.name, load.name));
                        }
                    }
                    Err(e) => series.failed = Some(format!("failed in rep {rep}: {e:#}")),
                }
            }
        }
    }
    for t in &mut targets {
        t.peak_rss_kib = t.pids.iter().map(|&p| procs::memory_kib(p, "VmHWM")).sum();
    }
    let peaks: Vec<String> = targets
        .iter()
        .filter(|t| !t.pids.is_empty())
        .map(|t| format!("{} {:.1} MiB", t.name, t.peak_rss_kib as f64 / 1024.0))
        .collect();
    notes.push(format!("peak RSS of the proxy processes over the scenario (VmHWM, summed): {}", peaks.join("; ")));
    for t in targets.iter().filter(|t| t.pids.len() == 2) {
        let split: Vec<String> = [&SMALL, &LARGE]
            .into_iter()
            .filter_map(|load| {
                let runs = &t.series(load).runs;
                let share = |k: usize| {
                    let v = runs.iter().map(|r| r.per_process[k] / r.proxy_cpu_s.max(1e-9)).collect();
                    100.0 * median(v).0
                };
                (!runs.is_empty()).then(|| {
                    let [a, b] = t.processes;
                    format!("{}: {a} {:.0} %, {b} {:.0} %", load.name, share(0), share(1))
                })
            })
            .collect();
        if !split.is_empty() {
            notes.push(format!("{}: proxy CPU by process ({})", t.name, split.join("; ")));
        }
    }
    for t in &targets {
        if let Some(admin) = t.admin {
            notes.push(format!("{}: server node counted {}", t.name, weir_counts(admin).await));
        }
        for line in problem_lines(t) {
            notes.push(format!("{} log: {line}", t.name));
        }
    }
    notes.push(format!("full-telemetry row: the collector stand-in received {}", sink.summary()));
    let nginx_errors = problem_lines_in(&[dir.path().join("nginx/error.log")]);
    notes.extend(nginx_errors.into_iter().map(|l| format!("nginx error log: {l}")));
    drop(chains);
    for mesh in meshes {
        mesh.stop();
    }
    nginx.proc.terminate(Duration::from_secs(5));
    // Nothing under test runs on the proxies' CPU during the direct runs: time busy there then
    // is other work on this machine, which skews every figure of the run.
    let direct = &targets[0];
    let busy: Vec<f64> = direct.small.runs.iter().chain(&direct.large.runs).map(|r| r.busy_proxy).collect();
    if let Some(worst) = busy.into_iter().reduce(f64::max).filter(|&b| b > 0.15) {
        notes.insert(
            0,
            format!(
                "CPU {PROXY_CPU} was up to {:.0} % busy during the direct runs, when nothing under test runs on it: \
                 other work shares this machine, so this run's figures are skewed (load average before the scenario: \
                 {})",
                worst * 100.0,
                load_before.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            ),
        );
    }
    if keep {
        notes.push(format!("configs and logs kept in {} (WEIR_BENCH_KEEP)", dir.keep().display()));
    }
    Ok(section(secs, reps, &targets, notes))
}

fn section(secs: u64, reps: usize, targets: &[Target], notes: Vec<String>) -> Section {
    Section { markdown: report(secs, reps, targets, &notes), rows: rows(targets), notes }
}

/// The figures of the tables as rows: per load rate, p50, p99 and proxy CPU (per GiB too for
/// 1 MiB); a path that did not run has the reason its table row gives.
fn rows(targets: &[Target]) -> Vec<Row> {
    let mut rows = Vec::new();
    for load in [&SMALL, &LARGE] {
        let small = load.body == SMALL.body;
        let figures = |f: &dyn Fn(&Sample) -> f64, proxied_only: bool| -> Vec<Figures> {
            let paths = targets.iter().filter(|t| !proxied_only || t.kind != Kind::Direct);
            let paths = paths.map(|t| {
                let role = match t.kind {
                    Kind::Direct => Role::Direct,
                    Kind::Weir => Role::Weir,
                    Kind::Peer => Role::Peer,
                };
                let s = t.series(load);
                match (&t.entry, &s.failed) {
                    (Err(why), _) | (Ok(_), Some(why)) => Figures::none(t.name, role, why),
                    _ => Figures::of(t.name, role, s.runs.iter().map(f).collect()),
                }
            });
            paths.collect()
        };
        let metric = |name, unit, better| Metric { scenario: "http", load: load.name.to_owned(), name, unit, better };
        rows.extend(metric("requests/s", "req/s", Better::Higher).rows(figures(&|s| s.rps, false)));
        rows.extend(metric(P50, "ms", Better::Lower).rows(figures(&|s| s.p50_ms, false)));
        rows.extend(metric(P99, "ms", Better::Lower).rows(figures(&|s| s.p99_ms, false)));
        rows.extend(metric(P999, "ms", Better::Lower).rows(figures(&|s| s.p999_ms, false)));
        let (unit, per) = if small { ("ms / 1000 req", 1e6) } else { ("ms / req", 1e3) };
        rows.extend(
            metric("proxy CPU", unit, Better::Lower).rows(figures(&|s| s.proxy_cpu_s * per / s.requests, true)),
        );
        if !small {
            let gib = |s: &Sample| s.proxy_cpu_s / (s.requests * load.body as f64 / (1u64 << 30) as f64);
            rows.extend(metric("proxy CPU per GiB", "s / GiB", Better::Lower).rows(figures(&gib, true)));
        }
    }
    let peak = targets.iter().filter(|t| t.kind != Kind::Direct).map(|t| {
        let role = if t.kind == Kind::Weir { Role::Weir } else { Role::Peer };
        match &t.entry {
            Err(why) => Figures::none(t.name, role, why),
            Ok(_) => Figures::of(t.name, role, vec![t.peak_rss_kib as f64 / 1024.0]),
        }
    });
    let metric =
        Metric { scenario: "http", load: "all loads".into(), name: "peak RSS", unit: "MiB", better: Better::Lower };
    rows.extend(metric.rows(peak.collect()));
    rows
}

/// A running nginx serving `/1k` and `/1m`.
struct Nginx {
    proc: Proc,
    addr: SocketAddr,
}

fn start_nginx(bin: &str, dir: &Path) -> anyhow::Result<Nginx> {
    use std::os::unix::fs::MetadataExt as _;
    let root = dir.join("nginx");
    let www = root.join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::create_dir_all(root.join("tmp"))?;
    std::fs::write(www.join("1k"), pattern(SMALL.body as usize))?;
    std::fs::write(www.join("1m"), pattern(LARGE.body as usize))?;
    let addr = super::free_port()?;
    // As root, nginx would hand its worker to `nobody`, who cannot read this private directory.
    let user = if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) { "user root root;\n" } else { "" };
    let r = root.display();
    let conf = format!(
        "{user}worker_processes 1;\npid {r}/nginx.pid;\nerror_log {r}/error.log warn;\n\
         events {{\n  worker_connections 4096;\n}}\n\
         http {{\n  access_log off;\n  default_type application/octet-stream;\n  sendfile on;\n  tcp_nopush on;\n  \
         keepalive_requests 100000;\n  keepalive_timeout 300s;\n  \
         client_body_temp_path {r}/tmp/body;\n  proxy_temp_path {r}/tmp/proxy;\n  fastcgi_temp_path {r}/tmp/fastcgi;\n  \
         uwsgi_temp_path {r}/tmp/uwsgi;\n  scgi_temp_path {r}/tmp/scgi;\n  \
         server {{\n    listen {addr};\n    root {};\n    location / {{ }}\n  }}\n}}\n",
        www.display()
    );
    let conf_path = root.join("nginx.conf");
    std::fs::write(&conf_path, conf)?;
    let (prefix, conf_s, err_s) =
        (root.display().to_string(), conf_path.display().to_string(), root.join("error.log").display().to_string());
    let proc = Proc::pinned(
        CLIENT_CPU,
        bin,
        &["-p", &prefix, "-c", &conf_s, "-e", &err_s, "-g", "daemon off;"],
        &root.join("stderr.log"),
    )?;
    let mut nginx = Nginx { proc, addr };
    if let Err(e) = super::wait_listening(addr) {
        nginx.proc.terminate(Duration::from_secs(2));
        let logs: String = ["stderr.log", "error.log"]
            .iter()
            .map(|f| std::fs::read_to_string(root.join(f)).unwrap_or_default())
            .collect();
        bail!("{e}\n{logs}");
    }
    Ok(nginx)
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| if i % 64 == 63 { b'\n' } else { b'a' + (i % 26) as u8 }).collect()
}

/// One GET of each file through `entry`; on Weir paths also one of the denied prefix.
async fn check(entry: SocketAddr, kind: Kind) -> anyhow::Result<()> {
    let get = |path: &'static str| async move {
        tokio::time::timeout(Duration::from_secs(10), crate::http_client::get_text(entry, path))
            .await
            .with_context(|| format!("GET {path}: no answer in 10 s"))?
            .with_context(|| format!("GET {path}"))
    };
    for load in [&SMALL, &LARGE] {
        let (status, body) = get(load.path).await?;
        if status != 200 || body.len() as u64 != load.body {
            bail!("GET {}: status {status}, {} body bytes (want 200, {})", load.path, body.len(), load.body);
        }
    }
    if kind == Kind::Weir {
        let (status, _) = get("/admin/x").await?;
        if status != 403 {
            bail!("GET {DENIED}/x: status {status}, want 403 from the deny rule");
        }
    }
    Ok(())
}

/// One measured wrk run: the sample, and a warning if wrk saw socket errors.
fn measure(entry: SocketAddr, pids: &[u32], load: &Load, secs: u64) -> anyhow::Result<(Sample, Option<String>)> {
    let cpu0: Vec<f64> = pids.iter().map(|&p| cpu_seconds(p)).collect();
    let busy0 = (cpu_busy_seconds(CLIENT_CPU), cpu_busy_seconds(PROXY_CPU));
    let started = Instant::now();
    let w = wrk(entry, load, secs);
    let wall = started.elapsed().as_secs_f64();
    let busy = (cpu_busy_seconds(CLIENT_CPU) - busy0.0, cpu_busy_seconds(PROXY_CPU) - busy0.1);
    let cpu: Vec<f64> = pids.iter().zip(&cpu0).map(|(&p, c0)| cpu_seconds(p) - c0).collect();
    let proxy_cpu_s = cpu.iter().sum();
    if let Some(dead) = pids.iter().find(|&&p| !procs::alive(p)) {
        let wrk_said = w.err().map_or(String::new(), |e| format!(" (wrk: {e:#})"));
        bail!("proxy process {dead} exited during the run{wrk_said}");
    }
    let w = w?;
    let sample = Sample {
        rps: w.rps,
        p50_ms: w.p50_ms,
        p99_ms: w.p99_ms,
        p999_ms: w.p999_ms,
        requests: w.requests,
        proxy_cpu_s,
        per_process: [cpu.first().copied().unwrap_or(0.0), cpu.get(1).copied().unwrap_or(0.0)],
        busy_client: busy.0 / wall,
        busy_proxy: busy.1 / wall,
    };
    Ok((sample, w.socket_errors))
}

/// The server node's HTTP request counters summed by status class and result, requests
/// refused for their form by reason, and body bytes that crossed userspace.
async fn weir_counts(admin: SocketAddr) -> String {
    let text = match crate::http_client::get_text(admin, "/metrics").await {
        Ok((200, t)) => t,
        Ok((status, _)) => return format!("nothing: /metrics answered {status}"),
        Err(e) => return format!("nothing: /metrics: {e:#}"),
    };
    let mut sums: Vec<(String, f64)> = Vec::new();
    let mut userspace = 0.0;
    for line in text.lines().filter(|l| l.starts_with("weir_http_")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(value) = value.parse::<f64>() else { continue };
        let label = |name: &str| {
            let key = format!("{name}=\"");
            series.split_once(&key).and_then(|(_, r)| r.split_once('"')).map_or("", |(v, _)| v).to_owned()
        };
        let key = if series.starts_with("weir_http_requests_total{") {
            format!("{} {}", label("status_class"), label("result"))
        } else if series.starts_with("weir_http_rejected_total{") {
            format!("refused {}", label("reason"))
        } else {
            if series.starts_with("weir_http_userspace_body_bytes_total{") {
                userspace += value;
            }
            continue;
        };
        match sums.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += value,
            None => sums.push((key, value)),
        }
    }
    if sums.is_empty() {
        return "no HTTP requests (weir_http_requests_total missing)".into();
    }
    sums.sort_by(|a, b| a.0.cmp(&b.0));
    let counts: Vec<String> = sums.iter().map(|(k, n)| format!("{k}: {n}")).collect();
    format!("{}; body bytes through userspace: {:.1} MiB", counts.join(", "), userspace / (1 << 20) as f64)
}

/// What a path's logs say beyond start-up: Weir's warnings and errors grouped, a peer's
/// lines (it logs only problems here) at most five plus a count.
fn problem_lines(t: &Target) -> Vec<String> {
    match t.kind {
        Kind::Peer => first_lines(t.logs.iter().flat_map(|p| read_lines(p)).collect()),
        _ => weir_log_summary(t),
    }
}

/// Weir's warning and error lines grouped by level, target, message and outcome: each group
/// with its count, how many came within a second of the end of a wrk run through the path
/// (wrk drops its connections mid-response when its time is up) and its first line.
fn weir_log_summary(t: &Target) -> Vec<String> {
    // (key, count, near a run's end, first line)
    let mut groups: Vec<(String, usize, usize, String)> = Vec::new();
    for line in t.logs.iter().flat_map(|p| read_lines(p)) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(ts), Some(level)) = (words.first(), words.get(1)) else { continue };
        if !matches!(*level, "WARN" | "ERROR") {
            continue;
        }
        let mut key: Vec<&str> = words[1..].iter().take_while(|w| !w.contains('=')).copied().collect();
        key.extend(words.iter().find(|w| w.starts_with("outcome=")));
        let key = key.join(" ");
        let near = seconds_of_day(ts).is_some_and(|x| {
            t.run_ends.iter().any(|&end| {
                let d = (x - end).rem_euclid(86_400.0);
                d.min(86_400.0 - d) <= 1.0
            })
        });
        match groups.iter_mut().find(|g| g.0 == key) {
            Some(g) => {
                g.1 += 1;
                g.2 += usize::from(near);
            }
            None => groups.push((key, 1, usize::from(near), line.chars().take(400).collect())),
        }
    }
    groups
        .into_iter()
        .map(|(key, n, near, first)| {
            let when = match near {
                0 => String::new(),
                _ if near == n => " (all within 1 s of the end of a wrk run)".to_owned(),
                _ => format!(" ({near} within 1 s of the end of a wrk run)"),
            };
            format!("{n} × `{key}`{when}; first: `{first}`")
        })
        .collect()
}

fn report(secs: u64, reps: usize, targets: &[Target], notes: &[String]) -> String {
    let mut t = String::new();
    let direct = targets.iter().find(|p| p.kind == Kind::Direct);
    let peers: Vec<&Target> = targets.iter().filter(|p| p.kind == Kind::Peer).collect();
    let fig = |v: (f64, f64, f64), prec: usize| {
        if reps > 1 {
            format!("{:.prec$} ({:.prec$}–{:.prec$})", v.0, v.1, v.2)
        } else {
            format!("{:.prec$}", v.0)
        }
    };
    let ratio = |a: f64, b: Option<(f64, f64, f64)>| {
        b.filter(|b| b.0 > 0.0).map_or("–".to_owned(), |b| format!("{:.2}", a / b.0))
    };
    let _ = writeln!(
        t,
        "\n## L7 benchmark (HTTP/1.1): wrk -t1 for {secs} s per run, {reps} interleaved rep(s); wrk and nginx on CPU \
         {CLIENT_CPU}, proxies on CPU {PROXY_CPU}\n"
    );
    for load in [&SMALL, &LARGE] {
        let cpu_scale = if load.body == SMALL.body { 1e6 } else { 1e3 };
        let cpu_per = |s: &Sample| s.proxy_cpu_s / s.requests * cpu_scale;
        let cpu_unit = if load.body == SMALL.body { "ms / 1000 req" } else { "ms / req" };
        let _ = writeln!(t, "{} responses, wrk -c{} (keep-alive):\n", load.name, load.conns);
        if load.body == SMALL.body {
            let _ = writeln!(
                t,
                "| path | req/s | × direct | × best peer | p50 ms | p99 ms | p99.9 ms | p99 × best peer | proxy CPU {cpu_unit} | CPU × best peer | CPU {CLIENT_CPU} / CPU {PROXY_CPU} busy % |"
            );
            let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
        } else {
            let _ = writeln!(
                t,
                "| path | req/s (= MiB/s) | × direct | × best peer | p50 ms | p99 ms | p99.9 ms | proxy CPU {cpu_unit} | proxy CPU s / GiB | CPU × best peer | CPU {CLIENT_CPU} / CPU {PROXY_CPU} busy % |"
            );
            let _ = writeln!(t, "|---|---|---|---|---|---|---|---|---|---|---|");
        }
        for p in targets {
            let s = p.series(load);
            let why = match (&p.entry, &s.failed) {
                (Err(why), _) | (Ok(_), Some(why)) => {
                    let flat = why.replace('|', "/").replace('\n', " ");
                    let mut why: String = flat.chars().take(400).collect();
                    if why.len() < flat.len() {
                        why.push('…');
                    }
                    Some(why)
                }
                _ => None,
            };
            let (Some(rps), None) = (s.stat(|r| r.rps), why.as_ref()) else {
                let why = why.unwrap_or_else(|| "no figures".into());
                let _ = writeln!(t, "| {} | {why} | – | – | – | – | – | – | – | – | – |", p.name);
                continue;
            };
            let p50 = s.stat(|r| r.p50_ms).unwrap_or_default();
            let p99 = s.stat(|r| r.p99_ms).unwrap_or_default();
            let p999 = s.stat(|r| r.p999_ms).unwrap_or_default();
            let cpu = median(s.runs.iter().map(cpu_per).collect());
            let direct_rps = direct.and_then(|d| d.series(load).stat(|r| r.rps));
            // The best peer per figure: highest rate, lowest latency and CPU.
            let best = |f: &dyn Fn(&Series) -> Option<Stat>, higher: bool| {
                let figures = peers.iter().filter(|h| h.entry.is_ok()).filter_map(|h| f(h.series(load)));
                figures.reduce(|a, b| if (b.0 > a.0) == higher { b } else { a })
            };
            let ha_rps = best(&|h| h.stat(|r| r.rps), true);
            let ha_cpu = best(&|h| h.stat(|r| r.proxy_cpu_s / r.requests), false)
                .map(|(m, lo, hi)| (m * cpu_scale, lo * cpu_scale, hi * cpu_scale));
            let proxied = !p.pids.is_empty();
            let dash = || "–".to_owned();
            let busy = format!(
                "{:.0} / {:.0}",
                100.0 * median(s.runs.iter().map(|r| r.busy_client).collect()).0,
                100.0 * median(s.runs.iter().map(|r| r.busy_proxy).collect()).0
            );
            let (cpu_cell, cpu_ratio) = if proxied { (fig(cpu, 2), ratio(cpu.0, ha_cpu)) } else { (dash(), dash()) };
            if load.body == SMALL.body {
                let ha_p99 = best(&|h| h.stat(|r| r.p99_ms), false);
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {} | {} | {cpu_cell} | {cpu_ratio} | {busy} |",
                    p.name,
                    fig(rps, 0),
                    ratio(rps.0, direct_rps),
                    ratio(rps.0, ha_rps),
                    fig(p50, 2),
                    fig(p99, 2),
                    fig(p999, 2),
                    ratio(p99.0, ha_p99),
                );
            } else {
                let gib = |r: &Sample| r.proxy_cpu_s / (r.requests * load.body as f64 / (1u64 << 30) as f64);
                let per_gib = if proxied { fig(median(s.runs.iter().map(gib).collect()), 2) } else { dash() };
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {} | {} | {} | {cpu_cell} | {per_gib} | {cpu_ratio} | {busy} |",
                    p.name,
                    fig(rps, 0),
                    ratio(rps.0, direct_rps),
                    ratio(rps.0, ha_rps),
                    fig(p50, 1),
                    fig(p99, 1),
                    fig(p999, 1),
                );
            }
        }
        let _ = writeln!(t);
    }
    let _ = writeln!(
        t,
        "Weir: client node L4 outbound → userspace TLS 1.3 mTLS → server node, inbound service `protocol = \"http\"` \
         with one deny rule ({DENIED}), access log off. Peers: two instances each in HTTP mode, keep-alive on both \
         sides, upstream connections reused, TLS 1.3 AES-128-GCM with client certificates, one worker each, no \
         access log. × best peer: to the peer with the best median of that figure in this run."
    );
    for n in notes {
        let _ = writeln!(t, "\nnote: {n}");
    }
    t
}
