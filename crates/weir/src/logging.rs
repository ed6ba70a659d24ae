//! Log setup: text or JSON lines to stderr, level from config or `RUST_LOG`.
use tracing_subscriber::EnvFilter;
use weir_config::LogFormat;

/// Logging for a running node.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

/// Logging for one-shot commands: warnings only unless `RUST_LOG` says otherwise.
pub fn init_cli() {
    init(LogFormat::Text, "warn");
}
