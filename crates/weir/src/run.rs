//! `weir run`: load config (or the embedded default), start the node, stop on SIGINT/SIGTERM.
use crate::{logging, EXIT_BAD_CONFIG};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(config: Option<PathBuf>, role: &str) -> ExitCode {
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
    if role != "node" {
        eprintln!("--role: {role:?} is not available yet (only \"node\")");
        return ExitCode::from(EXIT_BAD_CONFIG);
    }
    logging::init(config.log.format, &config.log.level);
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
        wait_for_signal().await;
        tracing::info!("shutting down: no new connections, waiting up to 10 s for open ones");
        node.shutdown(Duration::from_secs(10)).await;
        ExitCode::SUCCESS
    })
}

fn weir_sys_limits() -> Result<u64, String> {
    weir_app::raise_fd_limit().map_err(|e| e.to_string())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let term = async {
        match term.as_mut() {
            Some(t) => {
                t.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term => {}
    }
}
