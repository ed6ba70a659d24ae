//! The scan's result as data: every item is a [`Probe`], known or unknown with the reason, so
//! one unreadable file never hides the rest. Serialized as JSON schema 2
//! (docs/scan.schema.json); field names are part of that contract.

use crate::kernel::{CryptoDriver, Ktls, Rekey};
use crate::nic::Interface;
use crate::procs::Process;
use crate::rdma::RdmaDevice;
use crate::sidecar::{CgroupProgram, Redirect};
use crate::verdict::Finding;
use serde::Serialize;

/// Version of the JSON shape.
pub const SCHEMA_VERSION: u32 = 2;

/// A fact the scan established, or why it could not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Probe<T> {
    /// Read and understood.
    Known {
        /// The fact.
        value: T,
    },
    /// Not established, and why (missing file, tool, permission, malformed reply).
    Unknown {
        /// Why.
        reason: String,
    },
}

impl<T> Probe<T> {
    /// A known fact.
    pub fn known(value: T) -> Self {
        Self::Known { value }
    }

    /// An unknown fact with its reason.
    pub fn unknown(reason: impl Into<String>) -> Self {
        Self::Unknown { reason: reason.into() }
    }

    /// The fact, if known.
    pub fn value(&self) -> Option<&T> {
        match self {
            Self::Known { value } => Some(value),
            Self::Unknown { .. } => None,
        }
    }
}

/// Everything `weir scan` found on one host.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Kernel facts.
    pub kernel: KernelReport,
    /// Offload features per network interface.
    pub interfaces: Probe<Vec<Interface>>,
    /// Sockets with the kTLS ULP.
    pub ktls_sockets: Probe<Vec<KtlsSocket>>,
    /// /proc/net/tls_stat counters, in the kernel's order.
    pub tls_stat: Probe<Vec<Counter>>,
    /// RDMA devices.
    pub rdma: Probe<Vec<RdmaDevice>>,
    /// RDMA use by cgroup (queue pairs, `rdma.current`, `rdma.max`).
    pub rdma_use: Probe<Vec<crate::rdma_use::RdmaUse>>,
    /// Signs of a userspace sidecar mesh.
    pub sidecar: SidecarReport,
    /// What the facts mean for a sidecar and for Weir.
    pub findings: Vec<Finding>,
}

/// Kernel facts.
#[derive(Debug, Clone, Serialize)]
pub struct KernelReport {
    /// `uname -r`.
    pub release: Probe<String>,
    /// kTLS availability.
    pub ktls: Probe<Ktls>,
    /// TLS 1.3 rekey support in kTLS.
    pub tls13_rekey: Probe<Rekey>,
    /// The `gcm(aes)` implementation kTLS would use.
    pub gcm_aes: Probe<CryptoDriver>,
}

/// One named counter.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Counter {
    /// Counter name as the kernel spells it.
    pub name: String,
    /// Value.
    pub value: u64,
}

/// One kTLS socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KtlsSocket {
    /// Local address:port.
    pub local: String,
    /// Remote address:port.
    pub remote: String,
    /// TCP state name.
    pub state: String,
    /// Socket inode.
    pub inode: u64,
    /// TX mode: `base` (userspace), `sw`, `hw`, `hw-record`.
    pub tx: String,
    /// RX mode, as `tx`.
    pub rx: String,
    /// TLS version ("1.3").
    pub version: String,
    /// Cipher ("AES-GCM-128").
    pub cipher: String,
    /// Processes holding the socket open (empty when not found, e.g. without permission).
    pub owners: Vec<Process>,
}

/// Signs of a sidecar mesh.
#[derive(Debug, Clone, Serialize)]
pub struct SidecarReport {
    /// NAT redirects to a local port in the nftables ruleset.
    pub nft: Probe<Vec<Redirect>>,
    /// Same, from `iptables-save -t nat`.
    pub iptables: Probe<Vec<Redirect>>,
    /// Same, from `ip6tables-save -t nat`.
    pub ip6tables: Probe<Vec<Redirect>>,
    /// Running Envoy processes.
    pub envoy: Probe<Vec<Process>>,
    /// eBPF programs attached to cgroups.
    pub cgroup_bpf: Probe<Vec<CgroupProgram>>,
}
