//! The file as serde sees it: every value that needs checking kept with its span.
use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawConfig {
    pub trust_domain: Option<Spanned<String>>,
    pub role: Option<Spanned<String>>,
    pub host_channel: Option<RawHostChannel>,
    pub dpu: Option<RawDpu>,
    pub node: Option<RawNode>,
    pub identity: Option<RawIdentity>,
    pub admin: Option<RawAdmin>,
    pub log: Option<RawLog>,
    pub telemetry: Option<RawTelemetry>,
    pub ktls: Option<RawKtls>,
    pub inbound: Option<RawInbound>,
    #[serde(default)]
    pub outbound: Vec<RawOutbound>,
    pub kernel: Option<RawKernel>,
    #[serde(default)]
    pub workloads: Vec<RawWorkload>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHostChannel {
    pub listen: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub window_secs: Option<Spanned<i64>>,
    pub key_rotation_secs: Option<Spanned<i64>>,
    #[serde(default)]
    pub workloads: Vec<Spanned<String>>,
    pub control: Option<RawControl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDpu {
    pub host_channel: Option<Spanned<String>>,
    pub key_file: Option<Spanned<String>>,
    pub control: Option<RawControl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawControl {
    pub addr: Option<Spanned<String>>,
    pub peer_id: Option<Spanned<String>>,
    pub interval_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKernel {
    pub mode: Option<Spanned<String>>,
    pub cgroup: Option<Spanned<String>>,
    pub pin_dir: Option<Spanned<String>>,
    pub capture_listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkload {
    pub name: Option<Spanned<String>>,
    pub service_account: Option<Spanned<String>>,
    #[serde(default)]
    pub deny: Vec<Spanned<String>>,
    pub max_connections: Option<Spanned<i64>>,
    pub count_http: Option<bool>,
    pub rdma: Option<RawWorkloadRdma>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawWorkloadRdma {
    pub max_handles: Option<Spanned<i64>>,
    pub max_objects: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNode {
    pub name: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentity {
    pub namespace: Option<Spanned<String>>,
    pub service_account: Option<Spanned<String>>,
    pub ca_dir: Option<Spanned<String>>,
    pub create_ca_if_missing: Option<Spanned<bool>>,
    pub ca_url: Option<Spanned<String>>,
    pub ca_bundle: Option<Spanned<String>>,
    pub token_file: Option<Spanned<String>>,
    pub svid_ttl_secs: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmin {
    pub listen: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTelemetry {
    pub tcp_sample_interval_ms: Option<Spanned<i64>>,
    pub otlp_endpoint: Option<Spanned<String>>,
    pub otlp_queue: Option<Spanned<i64>>,
    pub span_sample_ratio: Option<Spanned<f64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKtls {
    pub mode: Option<Spanned<String>>,
    pub records_per_key: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInbound {
    pub listen: Option<Spanned<String>>,
    pub handshake_timeout_ms: Option<Spanned<i64>>,
    #[serde(default)]
    pub services: Vec<RawService>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawService {
    pub name: Option<Spanned<String>>,
    pub backend: Option<Spanned<String>>,
    #[serde(default)]
    pub allow: Vec<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub http: Option<RawHttp>,
    pub rdma_bootstrap: Option<bool>,
    pub workload: Option<Spanned<String>>,
    pub on_host: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttp {
    pub mode: Option<Spanned<String>>,
    pub max_head_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub request_head_timeout_ms: Option<Spanned<i64>>,
    pub response_timeout_ms: Option<Spanned<i64>>,
    pub default: Option<Spanned<String>>,
    #[serde(default)]
    pub rules: Vec<RawHttpRule>,
    #[serde(default)]
    pub rate_limits: Vec<RawRateLimit>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHttpRule {
    pub action: Option<Spanned<String>>,
    #[serde(default)]
    pub from: Vec<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<Spanned<String>>,
    pub path: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub headers: Vec<RawHeaderMatch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHeaderMatch {
    pub name: Option<Spanned<String>>,
    pub value: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRateLimit {
    pub from: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    pub per_second: Option<Spanned<i64>>,
    pub burst: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutbound {
    pub listen: Option<Spanned<String>>,
    #[serde(default)]
    pub capture: Vec<Spanned<String>>,
    pub service: Option<Spanned<String>>,
    pub peer: Option<Spanned<String>>,
    pub peer_id: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub http: Option<RawOutboundHttp>,
    pub rdma_bootstrap: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawOutboundHttp {
    pub mode: Option<Spanned<String>>,
    pub max_head_bytes: Option<Spanned<i64>>,
    pub max_headers: Option<Spanned<i64>>,
    pub request_head_timeout_ms: Option<Spanned<i64>>,
    pub connect_timeout_ms: Option<Spanned<i64>>,
    pub response_timeout_ms: Option<Spanned<i64>>,
    pub retries: Option<Spanned<i64>>,
    #[serde(default)]
    pub routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub host: Option<Spanned<String>>,
    pub path_prefix: Option<Spanned<String>>,
    #[serde(default)]
    pub split: Vec<RawSplit>,
    pub connect_timeout_ms: Option<Spanned<i64>>,
    pub response_timeout_ms: Option<Spanned<i64>>,
    pub retries: Option<Spanned<i64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSplit {
    pub service: Option<Spanned<String>>,
    pub weight: Option<Spanned<i64>>,
}

/// Best-effort dotted path of the key a serde error points at: the enclosing `[table]`
/// header plus the key on that line.
pub(crate) fn path_at(source: &str, offset: usize) -> String {
    let before = &source[..offset.min(source.len())];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = source[line_start..].lines().next().unwrap_or("");
    let key = line.split('=').next().unwrap_or("").trim();
    let table = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| {
            let l = l.trim();
            l.strip_prefix("[[")
                .and_then(|r| r.strip_suffix("]]"))
                .or_else(|| l.strip_prefix('[').and_then(|r| r.strip_suffix(']')))
        })
        .map(str::trim);
    match (table, key) {
        (_, k) if k.starts_with('[') => k.trim_matches(|c| c == '[' || c == ']').to_owned(),
        (Some(t), k) if !k.is_empty() => format!("{t}.{k}"),
        (Some(t), _) => t.to_owned(),
        (None, k) if !k.is_empty() => k.to_owned(),
        (None, _) => "(root)".to_owned(),
    }
}
