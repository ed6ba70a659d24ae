//! `weir run`: load config (or the embedded default), start the node, stop on SIGINT/SIGTERM.
use crate::{logging, EXIT_BAD_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(config: Option<PathBuf>, role: Option<&str>) -> ExitCode {
    let path = config.clone();
    let loaded = match &config {
        Some(path) => weir_config::load(path),
        None => Ok(weir_config::default_config()),
    };
    let config = match loaded {
        Ok(c) => c,
        Err(e) => {
            eprint!("{e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    match role {
        Some(r) if !["node", "dpu", "host"].contains(&r) => {
            eprintln!("--role: {r:?} is not one of node, dpu, host");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        Some(r) if r != config.role.name() => {
            eprintln!("--role {r}: the configuration says role = {:?}", config.role.name());
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
        _ => {}
    }
    let _log_writer = logging::init(config.log.format, &config.log.level);
    match weir_sys_limits() {
        Ok(n) => tracing::debug!(nofile = n, "open-file limit raised"),
        Err(e) => tracing::warn!(error = %e, "could not raise the open-file limit"),
    }
    tracing::info!(config = ?config, "effective configuration");
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async {
        let node = match weir_app::Node::start(config).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "node failed to start");
                return ExitCode::FAILURE;
            }
        };
        serve_until_stopped(&node, path.as_deref()).await;
        tracing::info!("shutting down: no new connections, waiting up to 10 s for open ones");
        node.shutdown(Duration::from_secs(10)).await;
        ExitCode::SUCCESS
    })
}

fn weir_sys_limits() -> Result<u64, String> {
    weir_app::raise_fd_limit().map_err(|e| e.to_string())
}

/// Runs until SIGINT/SIGTERM. SIGHUP, or a change of the file's modification time, reloads
/// the configuration: an invalid file is reported field by field and the running
/// configuration stays.
async fn serve_until_stopped(node: &weir_app::Node, path: Option<&std::path::Path>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut hup)) = (signal(SignalKind::terminate()), signal(SignalKind::hangup())) else {
        tracing::warn!("cannot install signal handlers: stopping only on Ctrl-C");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    let modified = |p: &std::path::Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let mut seen = path.and_then(modified);
    let mut poll = tokio::time::interval(Duration::from_secs(2));
    loop {
        let changed = tokio::select! {
            _ = tokio::signal::ctrl_c() => return,
            _ = term.recv() => return,
            _ = hup.recv() => true,
            _ = poll.tick() => {
                let now = path.and_then(modified);
                std::mem::replace(&mut seen, now) != now
            }
        };
        let Some(path) = path.filter(|_| changed) else { continue };
        match weir_config::load(path) {
            Err(e) => tracing::error!(errors = %e, "new configuration is invalid: keeping the running one"),
            Ok(c) => match node.reload(&c) {
                Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
                Err(e) => tracing::error!(error = %e, "configuration not reloaded"),
            },
        }
    }
}
