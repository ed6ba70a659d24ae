//! The `weir` binary: a thin clap front end over `weir-app` and friends.
#![forbid(unsafe_code)]

mod bench;
mod ca;
mod demo;
mod local_mesh;
mod logging;
mod run;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

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
        /// Role (only `node` for now).
        #[arg(long, default_value = "node")]
        role: String,
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
    /// Benchmark the hop against haproxy and no mesh, side by side (figures, not tests).
    Bench(bench::BenchArgs),
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config, role } => run::run(config, &role),
        Command::Ca { command } => {
            logging::init_cli();
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
        Command::Version => {
            println!("weir {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
    }
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
