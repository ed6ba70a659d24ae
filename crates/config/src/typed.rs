//! The typed configuration and the checks that build it from the raw file.
use crate::raw::{RawConfig, RawInbound, RawOutbound};
use crate::roles::{DpuLink, Role};
use crate::{line_of, FieldError};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use toml::Spanned;
use weir_identity::SpiffeId;

/// A node's whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Node name (logs, metrics).
    pub node_name: String,
    /// This node's identity.
    pub identity: IdentityConfig,
    /// Admin endpoint address (`/healthz`, `/readyz`, `/metrics`).
    pub admin: SocketAddr,
    /// Logging.
    pub log: LogConfig,
    /// Connection records and trace export.
    pub telemetry: TelemetryConfig,
    /// Kernel TLS.
    pub ktls: KtlsConfig,
    /// The inbound mTLS listener for peer nodes, if this node serves anything.
    pub inbound: Option<InboundConfig>,
    /// Local ports mapped to mesh services.
    pub outbound: Vec<OutboundRoute>,
    /// The eBPF kernel path.
    pub kernel: KernelConfig,
    /// Workloads: cgroups Weir manages, each with an identity and L4 rules.
    pub workloads: Vec<WorkloadConfig>,
    /// What this process is (DESIGN.md "Roles").
    pub role: Role,
}

/// The eBPF kernel path.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Whether it runs.
    pub mode: KernelMode,
    /// Weir's parent cgroup, relative to the cgroup v2 root (never the root itself).
    pub cgroup: String,
    /// bpffs folder for pinned maps and links.
    pub pin_dir: PathBuf,
    /// Where captured connections arrive (IPv4; the same port on `[::1]` takes IPv6).
    pub capture_listen: SocketAddr,
}

/// Whether the eBPF kernel path runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelMode {
    /// Explicit listeners only: no capture, no kernel policy (and no workloads).
    Off,
    /// eBPF capture, L4 policy and telemetry; failing to attach stops Weir.
    Ebpf,
}

/// A workload: a cgroup Weir manages, its identity and its L4 rules.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Name (also its cgroup directory).
    pub name: String,
    /// Its SPIFFE ID (`identity.namespace`, this service account).
    pub id: SpiffeId,
    /// Its L4 rules.
    pub l4: weir_policy::WorkloadL4,
    /// Count its HTTP/1.x requests in the kernel (sk_msg). Its sockets join a sockhash, where
    /// blocking reads may see spurious EAGAIN: for apps with non-blocking I/O.
    pub count_http: bool,
    /// What it may hold on RDMA devices; `None`: nothing (`rdma.max` 0).
    pub rdma: Option<crate::rdma::RdmaAllowance>,
}

/// Where this node's SVID comes from.
#[derive(Debug, Clone)]
pub struct IdentityConfig {
    /// The node's SPIFFE ID.
    pub id: SpiffeId,
    /// The CA that issues this node's SVIDs (and its workloads').
    pub ca: CaSource,
    /// SVID lifetime; rotation at half of it.
    pub svid_ttl: Duration,
}

/// Where the CA is: `identity.ca_dir`, or `identity.ca_url` with its bundle and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaSource {
    /// The built-in CA in a directory on this machine.
    Local {
        /// The CA's directory.
        dir: PathBuf,
        /// Create the CA when the directory has none (embedded default).
        create_if_missing: bool,
    },
    /// A `weir ca serve` reached over the network.
    Remote {
        /// `host:port`.
        addr: String,
        /// The root (PEM) the server's certificate must chain to.
        bundle: PathBuf,
        /// This plane's token for the server.
        token_file: PathBuf,
    },
}

/// Log output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// Text or JSON lines.
    pub format: LogFormat,
    /// Level: error, warn, info, debug or trace.
    pub level: String,
}

/// Connection records and trace export.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// How often `TCP_INFO` of every open mesh leg is read.
    pub tcp_sample_interval: Duration,
    /// OTLP/gRPC collector (`http://host:4317`) for request spans; none: no export.
    pub otlp_endpoint: Option<String>,
    /// Spans waiting for export at most; more are dropped (and counted), never waited for.
    pub otlp_queue: usize,
    /// Share of the traces this node starts that are sampled; a request that arrives with a
    /// `traceparent` keeps its caller's sampled flag.
    pub span_sample_ratio: f64,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable.
    Text,
    /// One JSON object per line.
    Json,
}

/// Kernel TLS settings.
#[derive(Debug, Clone)]
pub struct KtlsConfig {
    /// Whether to use kTLS.
    pub mode: KtlsMode,
    /// TLS records this side seals under one kTLS key before it rekeys (a kernel that can:
    /// a TLS 1.3 KeyUpdate) or ends the session (one that cannot). Below AES-GCM's
    /// confidentiality limit of 2^24 records.
    pub records_per_key: u64,
}

/// Whether to use kTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KtlsMode {
    /// Use it where the kernel has it; userspace TLS elsewhere.
    Auto,
    /// Always userspace TLS.
    Off,
}

/// The inbound listener.
#[derive(Debug, Clone)]
pub struct InboundConfig {
    /// Listen address for peer nodes (mTLS). On a host plane: for the DPU, which brings each
    /// inbound connection over the host channel, plaintext after its preamble.
    pub listen: SocketAddr,
    /// Time allowed for TLS handshake plus preamble.
    pub handshake_timeout: Duration,
    /// Local services and who may reach them.
    pub services: Vec<ServiceConfig>,
}

/// A local service offered to the mesh.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// Service name, as carried in the preamble.
    pub name: String,
    /// Where the service listens locally.
    pub backend: SocketAddr,
    /// SPIFFE IDs allowed to connect (default deny).
    pub allow: Vec<SpiffeId>,
    /// HTTP/1.1 handling (`protocol = "http"`); `None`: opaque bytes (L4).
    pub http: Option<crate::http::HttpConfig>,
    /// Connections carry RDMA bootstraps: each is recorded as an RDMA session intent.
    pub rdma_bootstrap: bool,
    /// The workload of this node that serves it (RDMA intents name it).
    pub workload: Option<String>,
    /// A DPU's service whose backend runs on the host: `backend` is then the host plane's
    /// inbound listener, reached through the host channel (preamble naming the caller).
    pub on_host: bool,
}

/// A local port mapped to a mesh service.
#[derive(Debug, Clone)]
pub struct OutboundRoute {
    /// Local listen address for apps, if any (a route may be reached by capture only).
    pub listen: Option<SocketAddr>,
    /// Service addresses whose connections the kernel path captures to this route.
    pub capture: Vec<SocketAddr>,
    /// Destination service name.
    pub service: String,
    /// The peer node's inbound address.
    pub peer: SocketAddr,
    /// The SPIFFE ID the peer node must present.
    pub peer_id: SpiffeId,
    /// HTTP/1.1 routing on this listener (`protocol = "http"`); `None`: opaque bytes.
    pub http: Option<crate::http::OutboundHttp>,
    /// Connections carry RDMA bootstraps: each is recorded as an RDMA session intent.
    pub rdma_bootstrap: bool,
}

pub(crate) struct Check<'a> {
    source: &'a str,
    errors: Vec<FieldError>,
}

impl Check<'_> {
    pub(crate) fn error(&mut self, path: &str, at: Option<usize>, reason: impl Into<String>) {
        let line = at.map(|o| line_of(self.source, o));
        self.errors.push(FieldError { path: path.to_owned(), line, reason: reason.into() });
    }

    /// Converts a present value; records an error naming `path` if `convert` fails.
    pub(crate) fn value<T, U>(
        &mut self,
        v: &Spanned<T>,
        path: &str,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match convert(v.get_ref()) {
            Ok(u) => Some(u),
            Err(reason) => {
                self.error(path, Some(v.span().start), reason);
                None
            }
        }
    }

    /// Like `value`, but a missing field is an error too.
    pub(crate) fn required<T, U>(
        &mut self,
        v: &Option<Spanned<T>>,
        path: &str,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match v {
            Some(v) => self.value(v, path, convert),
            None => {
                self.error(path, None, "missing (required)");
                None
            }
        }
    }

    /// Like `value`, with a default when absent.
    pub(crate) fn optional<T, U>(
        &mut self,
        v: &Option<Spanned<T>>,
        path: &str,
        default: U,
        convert: impl FnOnce(&T) -> Result<U, String>,
    ) -> Option<U> {
        match v {
            Some(v) => self.value(v, path, convert),
            None => Some(default),
        }
    }
}

pub(crate) fn addr(s: &String) -> Result<SocketAddr, String> {
    s.parse().map_err(|e| format!("{s:?} is not an address:port ({e})"))
}

pub(crate) fn spiffe_id(s: &String) -> Result<SpiffeId, String> {
    s.parse().map_err(|e| format!("{s:?} is not a SPIFFE ID: {e}"))
}

pub(crate) fn service_name(s: &String) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|c| matches!(c, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'));
    if ok {
        Ok(s.clone())
    } else {
        Err(format!("{s:?} is not a service name (1-253 of a-z 0-9 . - _)"))
    }
}

pub(crate) fn ranged(min: i64, max: i64) -> impl FnOnce(&i64) -> Result<i64, String> {
    move |v| if (min..=max).contains(v) { Ok(*v) } else { Err(format!("{v} is out of range {min}..={max}")) }
}

impl Config {
    pub(crate) fn from_raw(raw: RawConfig, source: &str) -> Result<Self, Vec<FieldError>> {
        let mut c = Check { source, errors: Vec::new() };
        let trust_domain = c.required(&raw.trust_domain, "trust_domain", |td| {
            SpiffeId::workload(td, "x", "x")
                .map(|_| td.clone())
                .map_err(|e| format!("{td:?} is not a trust domain: {e}"))
        });
        let node_name = match raw.node.as_ref().and_then(|n| n.name.as_ref()) {
            Some(n) => c.value(n, "node.name", |s| if s.is_empty() { Err("empty".into()) } else { Ok(s.clone()) }),
            None => Some("weir".to_owned()),
        };
        let identity = match &raw.identity {
            None => {
                c.error("identity", None, "missing section [identity]");
                None
            }
            Some(i) => {
                let segment = |s: &String| {
                    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
                    {
                        Ok(s.clone())
                    } else {
                        Err(format!("{s:?} is not a SPIFFE path segment (A-Z a-z 0-9 . - _)"))
                    }
                };
                let ns = c.required(&i.namespace, "identity.namespace", segment);
                let sa = c.required(&i.service_account, "identity.service_account", segment);
                let ca = ca_source(&mut c, i);
                let ttl = c.optional(&i.svid_ttl_secs, "identity.svid_ttl_secs", 3600, ranged(2, 30 * 24 * 3600));
                match (&trust_domain, ns, sa, ca, ttl) {
                    (Some(td), Some(ns), Some(sa), Some(ca), Some(ttl)) => SpiffeId::workload(td, &ns, &sa)
                        .ok()
                        .map(|id| IdentityConfig { id, ca, svid_ttl: Duration::from_secs(ttl as u64) }),
                    _ => None,
                }
            }
        };
        let admin = match raw.admin.as_ref().and_then(|a| a.listen.as_ref()) {
            Some(l) => c.value(l, "admin.listen", addr),
            None => Some(SocketAddr::from(([127, 0, 0, 1], 15000))),
        };
        let log = {
            let l = raw.log.as_ref();
            let format =
                c.optional(&l.and_then(|l| l.format.clone()), "log.format", LogFormat::Text, |f| match f.as_str() {
                    "text" => Ok(LogFormat::Text),
                    "json" => Ok(LogFormat::Json),
                    o => Err(format!("{o:?} is not one of text, json")),
                });
            let level =
                c.optional(&l.and_then(|l| l.level.clone()), "log.level", "info".to_owned(), |v| match v.as_str() {
                    "error" | "warn" | "info" | "debug" | "trace" => Ok(v.clone()),
                    o => Err(format!("{o:?} is not one of error, warn, info, debug, trace")),
                });
            format.zip(level).map(|(format, level)| LogConfig { format, level })
        };
        let telemetry = {
            let t = raw.telemetry.as_ref();
            let every = c.optional(
                &t.and_then(|t| t.tcp_sample_interval_ms.clone()),
                "telemetry.tcp_sample_interval_ms",
                1000,
                ranged(100, 600_000),
            );
            let queue =
                c.optional(&t.and_then(|t| t.otlp_queue.clone()), "telemetry.otlp_queue", 4096, ranged(1, 1 << 20));
            let endpoint = match t.and_then(|t| t.otlp_endpoint.as_ref()) {
                Some(e) => c.value(e, "telemetry.otlp_endpoint", |e| otlp_endpoint(e).map(Some)),
                None => Some(None),
            };
            let ratio = match t.and_then(|t| t.span_sample_ratio.as_ref()) {
                Some(r) => c.value(r, "telemetry.span_sample_ratio", |r| {
                    if (0.0..=1.0).contains(r) {
                        Ok(*r)
                    } else {
                        Err(format!("{r} is not between 0 and 1"))
                    }
                }),
                None => Some(1.0),
            };
            match (every, queue, endpoint, ratio) {
                (Some(every), Some(queue), Some(otlp_endpoint), Some(span_sample_ratio)) => Some(TelemetryConfig {
                    tcp_sample_interval: Duration::from_millis(every as u64),
                    otlp_endpoint,
                    otlp_queue: queue as usize,
                    span_sample_ratio,
                }),
                _ => None,
            }
        };
        let ktls = {
            let k = raw.ktls.as_ref();
            let mode = c.optional(&k.and_then(|k| k.mode.clone()), "ktls.mode", KtlsMode::Auto, |m| match m.as_str() {
                "auto" => Ok(KtlsMode::Auto),
                "off" => Ok(KtlsMode::Off),
                o => Err(format!("{o:?} is not one of auto, off")),
            });
            let records = c.optional(
                &k.and_then(|k| k.records_per_key.clone()),
                "ktls.records_per_key",
                1 << 23,
                ranged(1, 1 << 24),
            );
            mode.zip(records).map(|(mode, records)| KtlsConfig { mode, records_per_key: records as u64 })
        };
        let inbound = raw.inbound.as_ref().map(|i| inbound(&mut c, i));
        let kernel = kernel(&mut c, raw.kernel.as_ref());
        let namespace = raw.identity.as_ref().and_then(|i| i.namespace.as_ref()).map(|n| n.get_ref().clone());
        let workloads: Vec<_> = raw
            .workloads
            .iter()
            .enumerate()
            .map(|(n, w)| workload(&mut c, n, w, trust_domain.as_deref(), namespace.as_deref()))
            .collect();
        if kernel.as_ref().is_some_and(|k| k.mode == KernelMode::Off) && !raw.workloads.is_empty() {
            c.error("workloads", None, "workloads need the kernel path: set [kernel] mode = \"ebpf\"");
        }
        let mut names = HashSet::new();
        for (n, w) in raw.workloads.iter().enumerate() {
            if let Some(name) = &w.name {
                if !names.insert(name.get_ref().clone()) {
                    c.error(
                        &format!("workloads[{n}].name"),
                        Some(name.span().start),
                        format!("workload {:?} is defined twice", name.get_ref()),
                    );
                }
            }
        }
        let role = crate::roles::role(&mut c, &raw, trust_domain.as_deref());
        // A host plane's routes are checked as such even when its [dpu] section is bad.
        let dpu = match &role {
            Some(Role::Host(d)) => Some(Some(d)),
            None if raw.role.as_ref().is_some_and(|r| r.get_ref() == "host") => Some(None),
            _ => None,
        };
        let outbound: Vec<_> = raw.outbound.iter().enumerate().map(|(n, o)| outbound(&mut c, n, o, dpu)).collect();
        crate::rdma::check_serving_workloads(&mut c, &raw);
        let mut seen = HashSet::new();
        let mut captured = HashSet::new();
        for (n, o) in raw.outbound.iter().enumerate() {
            for (k, a) in o.capture.iter().enumerate() {
                if !captured.insert(a.get_ref().clone()) {
                    c.error(
                        &format!("outbound[{n}].capture[{k}]"),
                        Some(a.span().start),
                        format!("{} is captured by another route", a.get_ref()),
                    );
                }
            }
            if let Some(l) = &o.listen {
                if !seen.insert(l.get_ref().clone()) {
                    c.error(
                        &format!("outbound[{n}].listen"),
                        Some(l.span().start),
                        format!("{} is used by another route", l.get_ref()),
                    );
                }
            }
        }
        let dpu_role = raw.role.as_ref().is_some_and(|r| r.get_ref() == "dpu");
        crate::http::check_splits(&mut c, &raw.outbound, dpu_role);
        if !c.errors.is_empty() {
            return Err(c.errors);
        }
        let incomplete =
            || vec![FieldError { path: "(root)".into(), line: None, reason: "incomplete configuration".into() }];
        Ok(Self {
            trust_domain: trust_domain.ok_or_else(incomplete)?,
            node_name: node_name.ok_or_else(incomplete)?,
            identity: identity.ok_or_else(incomplete)?,
            admin: admin.ok_or_else(incomplete)?,
            log: log.ok_or_else(incomplete)?,
            telemetry: telemetry.ok_or_else(incomplete)?,
            ktls: ktls.ok_or_else(incomplete)?,
            inbound: inbound.map(|i| i.ok_or_else(incomplete)).transpose()?,
            outbound: outbound.into_iter().map(|o| o.ok_or_else(incomplete)).collect::<Result<_, _>>()?,
            kernel: kernel.ok_or_else(incomplete)?,
            workloads: workloads.into_iter().map(|w| w.ok_or_else(incomplete)).collect::<Result<_, _>>()?,
            role: role.ok_or_else(incomplete)?,
        })
    }
}

/// `[identity]`'s CA: exactly one of `ca_dir` (with `create_ca_if_missing`) and `ca_url`
/// (with `ca_bundle` and `token_file`).
fn ca_source(c: &mut Check<'_>, i: &crate::raw::RawIdentity) -> Option<CaSource> {
    let path = |s: &String| if s.is_empty() { Err("empty".to_owned()) } else { Ok(PathBuf::from(s)) };
    let at = |v: &Option<Spanned<String>>| v.as_ref().map(|v| v.span().start);
    match (&i.ca_dir, &i.ca_url) {
        (Some(_), Some(url)) => {
            let why = "set either identity.ca_dir (the built-in CA on this machine) or identity.ca_url (a `weir ca serve`), not both";
            c.error("identity.ca_url", Some(url.span().start), why);
            None
        }
        (None, None) => {
            let why =
                "missing: set identity.ca_dir (the built-in CA on this machine) or identity.ca_url (a `weir ca serve`)";
            c.error("identity.ca_dir", None, why);
            None
        }
        (Some(dir), None) => {
            for (field, v) in [("identity.ca_bundle", &i.ca_bundle), ("identity.token_file", &i.token_file)] {
                if v.is_some() {
                    c.error(field, at(v), "only with identity.ca_url (a remote CA); identity.ca_dir is set");
                }
            }
            let dir = c.value(dir, "identity.ca_dir", path)?;
            let create_if_missing = i.create_ca_if_missing.as_ref().is_some_and(|v| *v.get_ref());
            Some(CaSource::Local { dir, create_if_missing })
        }
        (None, Some(url)) => {
            if let Some(v) = &i.create_ca_if_missing {
                c.error(
                    "identity.create_ca_if_missing",
                    Some(v.span().start),
                    "only with identity.ca_dir: a remote CA is created where it runs",
                );
            }
            let addr = c.value(url, "identity.ca_url", host_port);
            let bundle = c.required(&i.ca_bundle, "identity.ca_bundle", path);
            let token_file = c.required(&i.token_file, "identity.token_file", path);
            Some(CaSource::Remote { addr: addr?, bundle: bundle?, token_file: token_file? })
        }
    }
}

/// `host:port` (a name or an address; `[v6]:port`), without a scheme or a path.
fn host_port(s: &String) -> Result<String, String> {
    let bad = || format!("{s:?} is not host:port (e.g. \"10.0.0.1:8450\" or \"ca.example:8450\")");
    if let Ok(a) = s.parse::<SocketAddr>() {
        return if a.port() != 0 { Ok(s.clone()) } else { Err(bad()) };
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
    match port.parse::<u16>() {
        Ok(p) if p != 0 && host_ok => Ok(s.clone()),
        _ => Err(bad()),
    }
}

/// `http://host:port` or `https://host:port`, as the OTLP/gRPC exporter takes it.
fn otlp_endpoint(e: &String) -> Result<String, String> {
    let rest = e.strip_prefix("http://").or_else(|| e.strip_prefix("https://"));
    match rest {
        Some(authority) if !authority.is_empty() && !authority.contains(['/', ' ']) => Ok(e.clone()),
        Some(_) => Err(format!("{e:?} needs a host and port and no path, e.g. \"http://127.0.0.1:4317\"")),
        None => Err(format!("{e:?} is not an http:// or https:// URL")),
    }
}

fn inbound(c: &mut Check<'_>, i: &RawInbound) -> Option<InboundConfig> {
    let listen = c.required(&i.listen, "inbound.listen", addr);
    let timeout = c.optional(&i.handshake_timeout_ms, "inbound.handshake_timeout_ms", 10_000, ranged(10, 600_000));
    let mut names = HashSet::new();
    let mut services = Vec::new();
    for (n, s) in i.services.iter().enumerate() {
        let p = |f: &str| format!("inbound.services[{n}].{f}");
        let name = c.required(&s.name, &p("name"), service_name);
        if let (Some(name), Some(raw)) = (&name, &s.name) {
            if !names.insert(name.clone()) {
                c.error(&p("name"), Some(raw.span().start), format!("service {name:?} is defined twice"));
            }
        }
        let backend = c.required(&s.backend, &p("backend"), addr);
        let allow: Vec<_> =
            s.allow.iter().enumerate().map(|(k, a)| c.value(a, &p(&format!("allow[{k}]")), spiffe_id)).collect();
        let http = crate::http::service(c, &p(""), s);
        if let (Some(name), Some(backend), Some(allow), Some(http)) =
            (name, backend, allow.into_iter().collect::<Option<Vec<_>>>(), http)
        {
            let (rdma_bootstrap, workload) = (s.rdma_bootstrap.unwrap_or(false), s.workload.as_ref());
            let workload = workload.map(|w| w.get_ref().clone());
            let on_host = s.on_host.as_ref().is_some_and(|o| *o.get_ref());
            services.push(ServiceConfig { name, backend, allow, http, rdma_bootstrap, workload, on_host });
        }
    }
    Some(InboundConfig { listen: listen?, handshake_timeout: Duration::from_millis(timeout? as u64), services })
}

/// One `[[outbound]]` entry. On a host plane (`dpu`) an entry names a service, the addresses
/// captured for it and, where L7 is placed on the host, its `protocol`/`http`; nothing else:
/// the DPU knows where the service's peer is, and the route's peer is the DPU's host channel
/// (`Some(None)`: a host plane whose link is bad).
fn outbound(c: &mut Check<'_>, n: usize, o: &RawOutbound, dpu: Option<Option<&DpuLink>>) -> Option<OutboundRoute> {
    let p = |f: &str| format!("outbound[{n}].{f}");
    if let Some(dpu) = dpu {
        let theirs = [("listen", o.listen.is_some()), ("peer", o.peer.is_some()), ("peer_id", o.peer_id.is_some())];
        for (field, _) in theirs.iter().filter(|(_, present)| *present) {
            c.error(&p(field), None, "a host plane only captures: the DPU knows each service's peer");
        }
        let capture = captured(c, n, o);
        let service = c.required(&o.service, &p("service"), service_name);
        let http = crate::http::outbound(c, &p(""), o);
        let dpu = dpu?;
        return Some(OutboundRoute {
            listen: None,
            capture: capture?,
            service: service?,
            peer: dpu.host_channel,
            peer_id: dpu.control.peer_id.clone(),
            http: http?,
            rdma_bootstrap: o.rdma_bootstrap.unwrap_or(false),
        });
    }
    let listen = o.listen.as_ref().map(|l| c.value(l, &p("listen"), addr));
    let capture = captured(c, n, o);
    let service = c.required(&o.service, &p("service"), service_name);
    let peer = c.required(&o.peer, &p("peer"), addr);
    let peer_id = c.required(&o.peer_id, &p("peer_id"), spiffe_id);
    let http = crate::http::outbound(c, &p(""), o);
    Some(OutboundRoute {
        listen: listen.map_or(Some(None), |l| l.map(Some))?,
        capture: capture?,
        service: service?,
        peer: peer?,
        peer_id: peer_id?,
        http: http?,
        rdma_bootstrap: o.rdma_bootstrap.unwrap_or(false),
    })
}

fn captured(c: &mut Check<'_>, n: usize, o: &RawOutbound) -> Option<Vec<SocketAddr>> {
    // IPv4-mapped IPv6 addresses are IPv4 to the kernel path: store them that way.
    let canonical = |s: &String| addr(s).map(|a| SocketAddr::new(a.ip().to_canonical(), a.port()));
    let capture: Vec<_> = o
        .capture
        .iter()
        .enumerate()
        .map(|(k, a)| c.value(a, &format!("outbound[{n}].capture[{k}]"), canonical))
        .collect();
    capture.into_iter().collect()
}

/// Deny rules per workload compile to LPM-trie entries; the maps hold 4096 of each family.
const MAX_RULES: usize = 4096;

fn kernel(c: &mut Check<'_>, k: Option<&crate::raw::RawKernel>) -> Option<KernelConfig> {
    let mode = c.optional(&k.and_then(|k| k.mode.clone()), "kernel.mode", KernelMode::Off, |m| match m.as_str() {
        "off" => Ok(KernelMode::Off),
        "ebpf" => Ok(KernelMode::Ebpf),
        o => Err(format!("{o:?} is not one of off, ebpf")),
    });
    let cgroup = c.optional(&k.and_then(|k| k.cgroup.clone()), "kernel.cgroup", "weir".to_owned(), |g| {
        let g = g.trim_matches('/');
        if g.is_empty() || g.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            Err(format!("{g:?} is not a cgroup below the root (the root cgroup is never used)"))
        } else {
            Ok(g.to_owned())
        }
    });
    let pin_dir =
        c.optional(&k.and_then(|k| k.pin_dir.clone()), "kernel.pin_dir", PathBuf::from("/sys/fs/bpf/weir"), |p| {
            let p = PathBuf::from(p);
            if p.is_absolute() && p.parent().is_some_and(|d| d != std::path::Path::new("/")) {
                Ok(p)
            } else {
                Err(format!("{} is not an absolute folder on bpffs", p.display()))
            }
        });
    let capture_listen = c.optional(
        &k.and_then(|k| k.capture_listen.clone()),
        "kernel.capture_listen",
        SocketAddr::from(([127, 0, 0, 1], 15006)),
        |a| match addr(a)? {
            SocketAddr::V4(v4) if v4.port() != 0 => Ok(SocketAddr::V4(v4)),
            _ => Err(format!("{a:?} must be an IPv4 address with a port (IPv6 uses [::1] and the same port)")),
        },
    );
    Some(KernelConfig { mode: mode?, cgroup: cgroup?, pin_dir: pin_dir?, capture_listen: capture_listen? })
}

fn workload(
    c: &mut Check<'_>,
    n: usize,
    w: &crate::raw::RawWorkload,
    td: Option<&str>,
    ns: Option<&str>,
) -> Option<WorkloadConfig> {
    let p = |f: &str| format!("workloads[{n}].{f}");
    let name = c.required(&w.name, &p("name"), |s| {
        if !s.is_empty()
            && s.len() <= 64
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s != "."
            && s != ".."
        {
            Ok(s.clone())
        } else {
            Err(format!("{s:?} is not a workload name (1-64 of A-Z a-z 0-9 - _ .)"))
        }
    });
    let sa = c.required(&w.service_account, &p("service_account"), |s| Ok(s.clone()));
    let deny: Vec<_> = w
        .deny
        .iter()
        .enumerate()
        .map(|(k, r)| c.value(r, &p(&format!("deny[{k}]")), |s| weir_policy::DenyRule::parse(s)))
        .collect();
    if w.deny.len() > MAX_RULES {
        c.error(&p("deny"), None, format!("{} rules: the kernel maps hold {MAX_RULES}", w.deny.len()));
    }
    let max = c.optional(&w.max_connections, &p("max_connections"), 0, ranged(0, 1_000_000));
    let id = match (td, ns, &sa) {
        (Some(td), Some(ns), Some(sa)) => match SpiffeId::workload(td, ns, sa) {
            Ok(id) => Some(id),
            Err(e) => {
                c.error(
                    &p("service_account"),
                    w.service_account.as_ref().map(|s| s.span().start),
                    format!("{sa:?} does not make a SPIFFE ID: {e}"),
                );
                None
            }
        },
        _ => None,
    };
    let rdma = crate::rdma::allowance(c, n, w.rdma.as_ref());
    Some(WorkloadConfig {
        name: name?,
        id: id?,
        l4: weir_policy::WorkloadL4 { deny: deny.into_iter().collect::<Option<_>>()?, max_connections: max? as u32 },
        count_http: w.count_http.unwrap_or(false),
        rdma: rdma?,
    })
}
