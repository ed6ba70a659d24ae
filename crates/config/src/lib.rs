//! Weir's configuration: one TOML file (or the embedded default) turned into a typed
//! [`Config`].
//!
//! Owns: the file format, its validation (every bad field reported at once with its path and
//! line: [`Errors`]) and the embedded default. Parse, don't validate: a [`Config`] cannot hold
//! a bad value. Does not own reloading or any runtime state.
#![forbid(unsafe_code)]

mod http;
mod raw;
mod rdma;
mod roles;
mod typed;

pub use http::{HttpConfig, HttpRoute, OutboundHttp};
pub use rdma::RdmaAllowance;
pub use roles::{DpuLink, HostChannelConfig, PlaneLink, Role};
pub use typed::{
    CaSource, Config, IdentityConfig, InboundConfig, KernelConfig, KernelMode, KtlsConfig, KtlsMode, LogConfig,
    LogFormat, OutboundRoute, ServiceConfig, TelemetryConfig, WorkloadConfig,
};

/// The embedded default configuration.
pub const DEFAULT: &str = include_str!("default.toml");

/// One bad field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `outbound[1].peer_id`.
    pub path: String,
    /// 1-based line in the file, where known.
    pub line: Option<usize>,
    /// What is wrong.
    pub reason: String,
}

/// Every bad field of one file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Errors {
    /// The file the errors are in.
    pub origin: String,
    /// The errors, in file order.
    pub fields: Vec<FieldError>,
}

impl std::fmt::Display for Errors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "{}: {} invalid field(s)", self.origin, self.fields.len())?;
        for e in &self.fields {
            match e.line {
                Some(line) => writeln!(f, "  {}:{}: {}: {}", self.origin, line, e.path, e.reason)?,
                None => writeln!(f, "  {}: {}: {}", self.origin, e.path, e.reason)?,
            }
        }
        Ok(())
    }
}

/// Parses `source` (named `origin` in errors).
pub fn parse(source: &str, origin: &str) -> Result<Config, Errors> {
    let fail = |fields| Errors { origin: origin.to_owned(), fields };
    let raw: raw::RawConfig = toml::from_str(source).map_err(|e| {
        let line = e.span().map(|s| line_of(source, s.start));
        let path = e.span().map_or_else(|| "(root)".to_owned(), |s| raw::path_at(source, s.start));
        fail(vec![FieldError { path, line, reason: e.message().trim().to_owned() }])
    })?;
    typed::Config::from_raw(raw, source).map_err(|mut fields| {
        fields.sort_by_key(|f| f.line.unwrap_or(0));
        fail(fields)
    })
}

/// Reads and parses a file.
pub fn load(path: &std::path::Path) -> Result<Config, Errors> {
    let origin = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|e| Errors {
        origin: origin.clone(),
        fields: vec![FieldError { path: "(file)".into(), line: None, reason: e.to_string() }],
    })?;
    parse(&source, &origin)
}

/// The embedded default, parsed.
pub fn default_config() -> Config {
    // The default is a constant checked by the `default_config_is_valid` test.
    #[allow(clippy::expect_used, reason = "constant input, covered by a test")]
    parse(DEFAULT, "(embedded default)").expect("embedded default config is valid")
}

pub(crate) fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

#[cfg(test)]
mod tests;
