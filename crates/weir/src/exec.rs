//! `weir exec --workload NAME -- CMD…`: starts a command inside a workload's cgroup, so the
//! kernel path captures and polices it without any change to the command.
use anyhow::{bail, Context};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

/// Options of `weir exec`.
#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    /// The node's configuration (the embedded default when absent).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The workload to run in.
    #[arg(long)]
    pub workload: String,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// Moves this process into the workload's cgroup and replaces it with the command. Returns
/// only on failure.
pub fn run(args: ExecArgs) -> anyhow::Result<()> {
    let config = match &args.config {
        Some(p) => weir_config::load(p).map_err(|e| anyhow::anyhow!("{e}"))?,
        None => weir_config::default_config(),
    };
    if !config.workloads.iter().any(|w| w.name == args.workload) {
        let known: Vec<&str> = config.workloads.iter().map(|w| w.name.as_str()).collect();
        bail!("no workload {:?} in the configuration (known: {})", args.workload, known.join(", "));
    }
    let dir = weir_ebpf::cgroup::v2_root()?.join(&config.kernel.cgroup).join(&args.workload);
    if !dir.is_dir() {
        bail!("{} does not exist: is `weir run` running with this configuration?", dir.display());
    }
    weir_ebpf::cgroup::enter(&dir).with_context(|| format!("enter {}", dir.display()))?;
    let (program, rest) = args.command.split_first().context("no command")?;
    let err = std::process::Command::new(program).args(rest).exec();
    bail!("exec {program}: {err}")
}
