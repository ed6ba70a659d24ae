//! The `weir` binary: a thin clap front end over `weir-app` and friends.
#![forbid(unsafe_code)]

mod ca;
mod demo;
mod exec;
mod logging;
mod run;
mod scan;
mod top;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use weir_bench as bench;

/// Exit code for a configuration error (EX_DATAERR-style, sysexits EX_USAGE).
pub const EXIT_BAD_CONFIG: u8 = 64;

/// Weir: a service-mesh data plane that keeps identity, policy and telemetry when the kernel
/// moves the bytes.
#[derive(Debug, Parser)]
#[command(name = "weir", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node (the embedded default when no --config is given).
    Run {
        /// TOML configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// The role this process must have (`node`, `dpu` or `host`): refused when the
        /// config's `role` differs, so a plane never starts with the other plane's config.
        #[arg(long)]
        role: Option<String>,
    },
    /// Manage the built-in certificate authority.
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Validate a configuration file: exit 0, or 64 naming every bad field.
    CheckConfig {
        /// TOML configuration file.
        file: PathBuf,
    },
    /// Run the local demo: CA, two nodes, a backend, sample traffic, a summary.
    Demo(demo::DemoArgs),
    /// Benchmark Weir against no mesh and haproxy, side by side: bulk hop, L7 HTTP, connect() (figures, not tests).
    Bench(bench::BenchArgs),
    /// Start a command inside a workload's cgroup (captured and policed by the kernel path).
    Exec(exec::ExecArgs),
    /// Remove everything the kernel path attached and pinned (after a crash, or to uninstall).
    EbpfDetach {
        /// The node's configuration (the embedded default when absent).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Internal: the connect() probe of `weir bench --scenario connect`.
    #[command(hide = true)]
    ProbeConnect(bench::connect::ProbeArgs),
    /// Inventory the host's offload features and sidecar signs, and say what a sidecar cannot see.
    Scan {
        /// Print JSON (schema 2, docs/scan.schema.json) instead of tables.
        #[arg(long)]
        json: bool,
        /// A running node's admin endpoint: adds what only the node knows (RDMA queue pairs
        /// with no recorded bootstrap).
        #[arg(long)]
        admin: Option<std::net::SocketAddr>,
    },
    /// A live table of a node's open mesh connections with their joined L4/L7 facts.
    Top(top::TopArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, role } => run::run(config, role.as_deref()),
        Command::Ca { command } => {
            if matches!(command, ca::CaCommand::Serve { .. }) {
                logging::init_service();
            } else {
                logging::init_cli();
            }
            report(ca::run(command))
        }
        Command::CheckConfig { file } => match weir_config::load(&file) {
            Ok(c) => {
                println!(
                    "{}: ok (node {}, id {}, {} inbound service(s), {} outbound route(s))",
                    file.display(),
                    c.node_name,
                    c.identity.id,
                    c.inbound.as_ref().map_or(0, |i| i.services.len()),
                    c.outbound.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprint!("{e}");
                ExitCode::from(EXIT_BAD_CONFIG)
            }
        },
        Command::Demo(args) => {
            logging::init_cli();
            report(demo::run(args))
        }
        Command::Bench(args) => {
            logging::init_cli();
            report(bench::run(args))
        }
        Command::Exec(args) => {
            logging::init_cli();
            report(exec::run(args))
        }
        Command::EbpfDetach { config } => {
            logging::init_cli();
            report(ebpf_detach(config))
        }
        Command::ProbeConnect(args) => report(bench::connect::probe(args)),
        Command::Scan { json, admin } => scan::run(json, admin),
        Command::Top(args) => report(top::run(args)),
        Command::Version => {
            println!("weir {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
}

/// Adopts whatever a previous `weir run` left pinned, then detaches and unpins it.
fn ebpf_detach(config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = match &config {
        Some(p) => weir_config::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => weir_config::default_config(),
    };
    if !config.kernel.pin_dir.exists() {
        println!("nothing pinned at {}", config.kernel.pin_dir.display());
        return Ok(());
    }
    let opts = weir_ebpf::Options { cgroup: config.kernel.cgroup.clone(), pin_dir: config.kernel.pin_dir.clone() };
    weir_ebpf::KernelPath::start(&opts)?.detach()?;
    println!("detached; removed {}", config.kernel.pin_dir.display());
    Ok(())
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
