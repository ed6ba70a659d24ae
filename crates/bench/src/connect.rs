//! connect() latency with the kernel path's programs attached (a workload cgroup with deny
//! rules, a connection limit and capture targets, none of which match) against the same
//! connect() from a cgroup with no programs. A child process (`weir probe-connect`) does the
//! connects, pinned to one CPU, interleaved in and out of the workload cgroup.
use super::report::{Better, Figures, Metric, Role, Section};
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::time::Instant;

/// Options of the hidden `weir probe-connect`.
#[derive(Debug, clap::Args)]
pub struct ProbeArgs {
    /// Where to connect.
    #[arg(long)]
    pub addr: SocketAddr,
    /// How many connects.
    #[arg(long)]
    pub count: usize,
    /// Enter this cgroup first.
    #[arg(long)]
    pub cgroup: Option<std::path::PathBuf>,
}

/// Connects `count` times (each closed with a reset so no TIME_WAIT piles up) and prints the
/// median and p99 latency in nanoseconds.
pub fn probe(args: ProbeArgs) -> anyhow::Result<()> {
    if let Some(dir) = &args.cgroup {
        weir_ebpf::cgroup::enter(dir)?;
    }
    let mut ns = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let t = Instant::now();
        let s = std::net::TcpStream::connect(args.addr).context("connect")?;
        ns.push(t.elapsed().as_nanos() as u64);
        use std::os::fd::AsFd;
        weir_app::abort_on_close(s.as_fd())?;
    }
    ns.sort_unstable();
    println!("{} {}", ns[ns.len() / 2], ns[ns.len() * 99 / 100]);
    Ok(())
}

fn run_probe(addr: SocketAddr, count: usize, cgroup: Option<&Path>) -> anyhow::Result<(u64, u64)> {
    let exe = std::env::current_exe()?;
    let mut cmd = std::process::Command::new("taskset");
    cmd.args(["-c", super::CLIENT_CPU]).arg(exe).args([
        "probe-connect",
        "--addr",
        &addr.to_string(),
        "--count",
        &count.to_string(),
    ]);
    if let Some(c) = cgroup {
        cmd.arg("--cgroup").arg(c);
    }
    let out = cmd.output()?;
    if !out.status.success() {
        bail!("probe: {}", String::from_utf8_lossy(&out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().map(|v| v.parse::<u64>());
    match (it.next(), it.next()) {
        (Some(Ok(p50)), Some(Ok(p99))) => Ok((p50, p99)),
        _ => bail!("probe printed {text:?}"),
    }
}

/// The two cgroups, as in the table.
const WITHOUT: &str = "no programs (Weir's parent cgroup)";
const WITH: &str = "workload (connect4 + sockops, 64 deny rules, limit, capture map)";

/// Runs the scenario and returns the report.
pub fn run(reps: usize, count: usize) -> anyhow::Result<Section> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    std::thread::spawn(move || {
        for s in listener.incoming() {
            drop(s);
        }
    });
    let tag = format!("weir-bench-{}", std::process::id());
    let opts = weir_ebpf::Options { cgroup: tag.clone(), pin_dir: std::path::PathBuf::from("/sys/fs/bpf").join(&tag) };
    let mut kernel = weir_ebpf::KernelPath::start(&opts)?;
    // A realistic table: 64 deny rules and a connection limit, none hit by the probe.
    let deny = (0..64)
        .map(|i| weir_policy::DenyRule::parse(&format!("198.51.100.{i}/32:443")))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    let plan = weir_ebpf::Plan {
        workloads: vec![weir_ebpf::WorkloadPlan {
            id: 1,
            name: "bench".into(),
            l4: weir_policy::WorkloadL4 { deny, max_connections: 100_000 },
            count_http: false,
        }],
        services: vec![("127.0.0.99:1".parse()?, 0)],
        capture: Some(weir_ebpf::Capture { v4: "127.0.0.1".parse()?, v6: "::1".parse()?, port: 1 }),
    };
    let result = (|| {
        kernel.apply(&plan)?;
        let inside = kernel.workload_cgroup("bench");
        let outside = inside.parent().map(Path::to_path_buf).context("parent cgroup")?;
        let (mut with, mut without) = (Vec::new(), Vec::new());
        run_probe(addr, count / 4, Some(&outside))?; // warm-up
        for _ in 0..reps {
            without.push(run_probe(addr, count, Some(&outside))?);
            with.push(run_probe(addr, count, Some(&inside))?);
        }
        anyhow::Ok((with, without))
    })();
    kernel.detach()?;
    let (with, without) = result?;
    let med = |v: &[(u64, u64)], f: fn(&(u64, u64)) -> u64| {
        let mut x: Vec<u64> = v.iter().map(f).collect();
        x.sort_unstable();
        x[x.len() / 2] as f64 / 1000.0
    };
    let mut t = String::new();
    let _ = writeln!(t, "\n## connect() latency: kernel path attached vs not ({reps} interleaved reps x {count} connects, loopback, probe on CPU {})\n", super::CLIENT_CPU);
    let _ = writeln!(t, "| cgroup | p50 µs | p99 µs |\n|---|---|---|");
    let _ = writeln!(t, "| {WITHOUT} | {:.2} | {:.2} |", med(&without, |r| r.0), med(&without, |r| r.1));
    let _ = writeln!(t, "| {WITH} | {:.2} | {:.2} |", med(&with, |r| r.0), med(&with, |r| r.1));
    let _ = writeln!(t, "\nmedian added by the kernel path: {:+.2} µs", med(&with, |r| r.0) - med(&without, |r| r.0));
    let mut rows = Vec::new();
    for (name, f) in [("p50 connect()", (|r: &(u64, u64)| r.0) as fn(&(u64, u64)) -> u64), ("p99 connect()", |r| r.1)] {
        let us = |v: &[(u64, u64)]| v.iter().map(|r| f(r) as f64 / 1000.0).collect();
        let metric = Metric {
            scenario: "connect",
            load: format!("{count} connects × {reps} reps"),
            name,
            unit: "µs",
            better: Better::Lower,
        };
        rows.extend(
            metric
                .rows(vec![Figures::of(WITHOUT, Role::Direct, us(&without)), Figures::of(WITH, Role::Weir, us(&with))]),
        );
    }
    Ok(Section { markdown: t, rows, notes: Vec::new() })
}
