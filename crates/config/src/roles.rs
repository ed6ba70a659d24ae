//! `role` and the sections that belong to one role: the DPU's `[host_channel]` and the host
//! plane's `[dpu]` (DESIGN.md "Roles"), and the control connection the two planes share.
use crate::raw::{RawConfig, RawControl};
use crate::typed::{addr, ranged, spiffe_id, Check};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use weir_identity::SpiffeId;

/// The role of this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A mesh node on a host: listeners, capture, policy and telemetry for local workloads.
    Node,
    /// The perimeter on a DPU: acts on the wire for the host's registered workloads, which
    /// reach it over the host channel.
    Dpu(HostChannelConfig),
    /// The host plane of a host whose DPU runs `dpu`: capture, L4 policy and telemetry for
    /// the host's workloads, no TLS; captured connections go to the DPU.
    Host(DpuLink),
}

impl Role {
    /// `node`, `dpu` or `host`, as the config file spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::Dpu(_) => "dpu",
            Self::Host(_) => "host",
        }
    }

    /// The control connection to the other plane, if this role has one.
    pub fn control(&self) -> Option<&PlaneLink> {
        match self {
            Self::Node => None,
            Self::Dpu(h) => Some(&h.control),
            Self::Host(d) => Some(&d.control),
        }
    }
}

/// The DPU's side of the host channel: plaintext connections from the host plane, each
/// opened by an authenticated preamble naming a registered workload (`weir_tls::host_channel`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostChannelConfig {
    /// Where the host plane connects (the host-facing interface).
    pub listen: SocketAddr,
    /// The key shared with the host plane: a file holding at least 32 bytes as hex.
    pub key_file: PathBuf,
    /// How far a preamble's time may be from this plane's clock.
    pub window: Duration,
    /// How often the DPU makes a fresh channel key and sends it to the host plane over the
    /// control connection (the key file's key is the first).
    pub key_rotation: Duration,
    /// The host's workloads this DPU acts for.
    pub workloads: Vec<SpiffeId>,
    /// The control connection: where the DPU listens for the host plane, and its identity.
    pub control: PlaneLink,
}

/// The host plane's way to its DPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DpuLink {
    /// The DPU's host-channel listener: every captured connection goes there.
    pub host_channel: SocketAddr,
    /// The key shared with the DPU (same format as the DPU's `host_channel.key_file`).
    pub key_file: PathBuf,
    /// The control connection: the DPU's control address and identity.
    pub control: PlaneLink,
}

/// The mTLS control connection between the two planes, over which each sends its certificate
/// state (and the DPU its connection records).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlaneLink {
    /// The DPU's control listener (the DPU binds it, the host connects to it).
    pub addr: SocketAddr,
    /// The other plane's SPIFFE ID, checked in the handshake.
    pub peer_id: SpiffeId,
    /// How often each plane sends its state; three missed intervals make the other plane
    /// unready.
    pub interval: Duration,
}

/// Checks `role` and the sections only one role may have.
pub(crate) fn role(c: &mut Check<'_>, raw: &RawConfig, trust_domain: Option<&str>) -> Option<Role> {
    let name = c.optional(&raw.role, "role", "node".to_owned(), |r| match r.as_str() {
        "node" | "dpu" | "host" => Ok(r.clone()),
        o => Err(format!("{o:?} is not one of node, dpu, host")),
    })?;
    let foreign = |c: &mut Check<'_>, present: bool, section: &str, owner: &str| {
        if present {
            c.error(section, None, format!("[{section}] belongs to role = \"{owner}\""));
        }
    };
    if name != "dpu" {
        for (n, s) in raw.inbound.iter().flat_map(|i| i.services.iter()).enumerate() {
            if let Some(on_host) = s.on_host.as_ref().filter(|o| *o.get_ref()) {
                let why = "only a DPU reaches backends on its host (through the host plane)";
                c.error(&format!("inbound.services[{n}].on_host"), Some(on_host.span().start), why);
            }
        }
    }
    match name.as_str() {
        "dpu" => {
            foreign(c, raw.dpu.is_some(), "dpu", "host");
            dpu(c, raw, trust_domain).map(Role::Dpu)
        }
        "host" => {
            foreign(c, raw.host_channel.is_some(), "host_channel", "dpu");
            host(c, raw, trust_domain).map(Role::Host)
        }
        _ => {
            foreign(c, raw.host_channel.is_some(), "host_channel", "dpu");
            foreign(c, raw.dpu.is_some(), "dpu", "host");
            Some(Role::Node)
        }
    }
}

fn dpu(c: &mut Check<'_>, raw: &RawConfig, trust_domain: Option<&str>) -> Option<HostChannelConfig> {
    let Some(h) = &raw.host_channel else {
        c.error("host_channel", None, "role = \"dpu\" needs a [host_channel] section");
        return None;
    };
    if !raw.workloads.is_empty() {
        c.error(
            "workloads",
            None,
            "[[workloads]] are cgroups on a host: a dpu lists the host's workloads in host_channel.workloads",
        );
    }
    let listen = c.required(&h.listen, "host_channel.listen", addr);
    let key_file = c.required(&h.key_file, "host_channel.key_file", path);
    let window = c.optional(&h.window_secs, "host_channel.window_secs", 30, ranged(1, 300));
    let rotation = c.optional(&h.key_rotation_secs, "host_channel.key_rotation_secs", 3600, ranged(2, 86_400));
    if h.workloads.is_empty() {
        c.error("host_channel.workloads", None, "empty: a dpu acts only for registered workloads");
    }
    let ids: Vec<Option<SpiffeId>> = h
        .workloads
        .iter()
        .enumerate()
        .map(|(n, w)| c.value(w, &format!("host_channel.workloads[{n}]"), |s| in_domain(s, trust_domain)))
        .collect();
    let control = control(c, "host_channel", h.control.as_ref(), trust_domain);
    let workloads = ids.into_iter().collect::<Option<Vec<_>>>()?;
    Some(HostChannelConfig {
        listen: listen?,
        key_file: key_file?,
        window: Duration::from_secs(window? as u64),
        key_rotation: Duration::from_secs(rotation? as u64),
        workloads,
        control: control?,
    })
}

fn host(c: &mut Check<'_>, raw: &RawConfig, trust_domain: Option<&str>) -> Option<DpuLink> {
    let Some(d) = &raw.dpu else {
        c.error("dpu", None, "role = \"host\" needs a [dpu] section");
        return None;
    };
    if raw.kernel.as_ref().and_then(|k| k.mode.as_ref()).is_none_or(|m| m.get_ref() != "ebpf") {
        c.error("kernel.mode", None, "a host plane captures its workloads' connections: set \"ebpf\"");
    }
    let host_channel = c.required(&d.host_channel, "dpu.host_channel", addr);
    let key_file = c.required(&d.key_file, "dpu.key_file", path);
    let control = control(c, "dpu", d.control.as_ref(), trust_domain);
    Some(DpuLink { host_channel: host_channel?, key_file: key_file?, control: control? })
}

/// `[SECTION.control]`: `addr`, the other plane's `peer_id` and `interval_secs`.
fn control(
    c: &mut Check<'_>,
    section: &str,
    raw: Option<&RawControl>,
    trust_domain: Option<&str>,
) -> Option<PlaneLink> {
    let Some(r) = raw else {
        c.error(&format!("{section}.control"), None, "missing: the two planes hold one control connection");
        return None;
    };
    let p = |f: &str| format!("{section}.control.{f}");
    let addr = c.required(&r.addr, &p("addr"), addr);
    let peer_id = c.required(&r.peer_id, &p("peer_id"), |s| in_domain(s, trust_domain));
    let interval = c.optional(&r.interval_secs, &p("interval_secs"), 5, ranged(1, 60));
    Some(PlaneLink { addr: addr?, peer_id: peer_id?, interval: Duration::from_secs(interval? as u64) })
}

fn path(s: &String) -> Result<PathBuf, String> {
    if s.is_empty() {
        Err("empty".into())
    } else {
        Ok(PathBuf::from(s))
    }
}

fn in_domain(s: &String, trust_domain: Option<&str>) -> Result<SpiffeId, String> {
    let id = spiffe_id(s)?;
    match trust_domain {
        Some(td) if id.trust_domain() != td => Err(format!("{s:?} is outside this trust domain ({td})")),
        _ => Ok(id),
    }
}
