//! Log setup: text or JSON lines to stderr, level from config or `RUST_LOG`.
//!
//! A running node writes through a background thread (tracing-appender): formatting stays on
//! the thread that logs, the write(2) of each line does not. Under overload (more than 128k
//! lines waiting) lines are dropped rather than stalling traffic; lines reach the file a moment
//! after they are logged.
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;
use weir_config::LogFormat;

/// Logging for a running node. Hold the guard until the node has stopped: dropping it writes
/// out what is still queued.
pub fn init(format: LogFormat, level: &str) -> WorkerGuard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let (writer, guard) = tracing_appender::non_blocking(std::io::stderr());
    // Colour codes only for a person at a terminal, not in files or collectors.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer).with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

/// Logging for one-shot commands: warnings only unless `RUST_LOG` says otherwise, written
/// directly (a command that exits right after an error must not lose the line).
pub fn init_cli() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}
