//! Judgement: for each fact the scan found, which traffic a userspace sidecar on this host
//! cannot see or would force back through the CPU, and what Weir does about it. Pure: a
//! function of the report's facts.

use crate::report::{KtlsSocket, Probe, Report};
use serde::Serialize;

/// One judged fact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable machine name: `ktls_unavailable`, `ktls_available`, `ktls_socket_hw`,
    /// `ktls_socket_sw`, `nic_tls_offload`, `nic_esp_offload`, `sidecar_redirect`,
    /// `envoy_process`, `cgroup_bpf`, `rdma_device`, `rdma_use`; from a node (`weir scan
    /// --admin`): `rdma_unauthorized_qp`, `node_unreachable`.
    pub kind: String,
    /// What was found.
    pub subject: String,
    /// What it means for a userspace sidecar.
    pub sidecar: String,
    /// What Weir does about it.
    pub weir: String,
}

fn finding(kind: &str, subject: String, sidecar: &str, weir: &str) -> Finding {
    Finding { kind: kind.into(), subject, sidecar: sidecar.into(), weir: weir.into() }
}

/// Judges every known fact of a report (its `findings` field is ignored).
pub fn judge(r: &Report) -> Vec<Finding> {
    let mut out = Vec::new();
    match r.kernel.ktls.value() {
        Some(k) if !k.available => out.push(finding(
            "ktls_unavailable",
            format!("kTLS unavailable: {}", k.reason),
            "TLS runs in userspace whoever terminates it: every byte is encrypted by the CPU and copied through the proxy",
            "Weir runs the same hop on rustls in userspace (mode `userspace` on every metric and log line), never plaintext; on a kernel with CONFIG_TLS it switches to kTLS + splice",
        )),
        Some(k) => out.push(finding(
            "ktls_available",
            format!("kTLS available: {}", k.reason),
            "a sidecar keeps TLS in userspace anyway: each byte is read into the proxy, encrypted and written back",
            "Weir does the handshake in userspace, installs the keys into kTLS and moves bytes with splice (`ktls_sw`)",
        )),
        None => {}
    }
    for s in r.ktls_sockets.value().into_iter().flatten() {
        out.push(ktls_socket(s));
    }
    for i in r.interfaces.value().into_iter().flatten() {
        for f in i.features.iter().filter(|f| f.active) {
            if f.name.starts_with("tls-hw") {
                out.push(finding(
                    "nic_tls_offload",
                    format!("{} has {} on", i.name, f.name),
                    "a sidecar that terminates TLS in userspace cannot use the NIC's TLS engine: crypto goes back onto the CPU",
                    "Weir installs the session keys into kTLS so the NIC does the crypto (`ktls_hw`), keeping L4/L7 telemetry",
                ));
            } else {
                out.push(finding(
                    "nic_esp_offload",
                    format!("{} has {} on", i.name, f.name),
                    "IPsec is applied below the socket layer: a sidecar sees plaintext before it, never the ESP traffic itself",
                    "Weir's identity and policy sit at the connection, above IPsec; both can run together",
                ));
            }
        }
    }
    let sc = &r.sidecar;
    for (source, probe) in [("nft", &sc.nft), ("iptables", &sc.iptables), ("ip6tables", &sc.ip6tables)] {
        for d in probe.value().into_iter().flatten() {
            let port = d.to_port.map_or_else(String::new, |p| format!(" to :{p}"));
            out.push(Finding {
                kind: "sidecar_redirect".into(),
                subject: format!("{source} {}{port} ({} {}: {})", d.action, d.table, d.chain, d.rule),
                sidecar: "app traffic is detoured through a userspace proxy: every byte copied twice, plus a second TCP stack traversal".into(),
                weir: "Weir captures with eBPF connect hooks (cgroup/connect4/6) instead: no NAT, no detour, bytes moved by splice".into(),
            });
        }
    }
    for p in sc.envoy.value().into_iter().flatten() {
        out.push(finding(
            "envoy_process",
            format!("Envoy running (pid {}, {})", p.pid, p.comm),
            "a userspace L7 proxy reads and rewrites every byte of the connections it handles",
            "Weir reads only HTTP heads into userspace and splices bodies; the rest stays in the kernel",
        ));
    }
    for p in sc.cgroup_bpf.value().into_iter().flatten() {
        out.push(finding(
            "cgroup_bpf",
            format!("eBPF {} program {} (id {}) on {}", p.attach_type, p.name, p.id, p.cgroup),
            "connections here are already steered or policed in the kernel; a sidecar's NAT rules may race with it",
            "Weir attaches its own programs (multi-attach) to its parent cgroup only, and adopts its pinned links after a restart",
        ));
    }
    for d in r.rdma.value().into_iter().flatten() {
        let layers: Vec<_> = d.ports.iter().map(|p| format!("port {} {}", p.port, p.link_layer)).collect();
        out.push(Finding {
            kind: "rdma_device".into(),
            subject: format!("RDMA device {} ({})", d.name, layers.join(", ")),
            sidecar: "memory-to-memory traffic no proxy can see".into(),
            weir: "Weir controls the TCP bootstrap that exchanges queue pairs (mTLS + policy) and RDMA cgroup limits, and exports the port counters".into(),
        });
    }
    for u in r.rdma_use.value().into_iter().flatten() {
        out.push(Finding {
            kind: "rdma_use".into(),
            subject: format!("{} RDMA queue pair(s), {} connected, owned by cgroup {}", u.queue_pairs, u.connected, u.cgroup),
            sidecar: "a sidecar never sees these sessions, nor who set them up".into(),
            weir: "Weir joins each queue pair to its workload and flags those with no bootstrap recorded through the mesh (`/rdma`, weir_rdma_unauthorized_qps)".into(),
        });
    }
    out
}

fn ktls_socket(s: &KtlsSocket) -> Finding {
    let owner = s.owners.first().map_or_else(|| "owner unknown".to_owned(), |p| format!("pid {} {}", p.pid, p.comm));
    let subject = format!("kTLS socket {} -> {} ({owner}) TX {} RX {}", s.local, s.remote, s.tx, s.rx);
    if ["hw", "hw-record"].contains(&s.tx.as_str()) || ["hw", "hw-record"].contains(&s.rx.as_str()) {
        finding(
            "ktls_socket_hw",
            subject,
            "crypto happens on the NIC: a sidecar sees ciphertext or nothing",
            "Weir does the handshake in userspace and installs keys into kTLS/NIC, keeping L4/L7 telemetry",
        )
    } else {
        finding(
            "ktls_socket_sw",
            subject,
            "the kernel encrypts after the app writes: a sidecar on the wire path sees only ciphertext",
            "Weir's own connections run this way (`ktls_sw`) and keep identity, policy and telemetry",
        )
    }
}

impl<T> Probe<T> {
    /// The reason, if unknown.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Self::Known { .. } => None,
            Self::Unknown { reason } => Some(reason),
        }
    }
}
