//! Reads what the host's kernel reports about offload and traffic visibility: sock_diag (TCP
//! sockets with TCP_INFO and kTLS ULP info), /proc, /sys, ethtool netlink; and judges it
//! (`weir scan`).
//!
//! Owns: reading and parsing those kernel interfaces, and the verdicts. Does not own output
//! formatting (the `weir` binary does) or acting on anything it finds; the one writer,
//! [`rdma_cgroup`], sets a cgroup's RDMA limits only when a caller asks. Every item of a scan is
//! a [`Probe`]: a missing file, tool or permission, or a malformed reply, makes that item
//! unknown with the reason, and the scan carries on.
//!
//! For the app: [`tcp_sockets`] (is a socket's kTLS in software or hardware, its TCP_INFO) and
//! [`tls_stat::parse`] (host kTLS counters).
#![forbid(unsafe_code)]

pub mod kernel;
pub mod nic;
pub mod procs;
pub mod rdma;
pub mod rdma_cgroup;
pub mod rdma_res;
pub mod rdma_use;
pub mod report;
pub mod sidecar;
mod sock_diag;
pub mod tcp_info;
pub mod tls_stat;
pub mod ulp;
pub mod verdict;

pub use report::{Probe, Report};
pub use sock_diag::{raw_ulp_payloads, tcp_socket, tcp_sockets, DiagError, TcpSocket, TcpState};

use report::{Counter, KernelReport, KtlsSocket, SidecarReport};

/// Runs every probe and judges the result. Needs a tokio runtime (ethtool netlink is async);
/// the other probes are short blocking reads.
pub async fn scan() -> Report {
    let release = kernel::release();
    let rel = release.value().cloned().unwrap_or_default();
    let tls_stat = tls_stat::read();
    let ktls = kernel::judge_ktls(&kernel::ktls_facts(&rel));
    let tls13_rekey = Probe::known(kernel::rekey(&weir_tls::ktls::detect_blocking()));
    let kernel = KernelReport { ktls: Probe::known(ktls), tls13_rekey, gcm_aes: kernel::active_gcm_aes(), release };
    let mut report = Report {
        schema: report::SCHEMA_VERSION,
        kernel,
        interfaces: nic::interfaces().await,
        ktls_sockets: ktls_sockets(),
        tls_stat: match tls_stat {
            Probe::Known { value } => {
                Probe::known(value.into_iter().map(|(name, value)| Counter { name, value }).collect())
            }
            Probe::Unknown { reason } => Probe::unknown(reason),
        },
        rdma: rdma::devices(),
        rdma_use: rdma_use::by_cgroup(),
        sidecar: SidecarReport {
            nft: sidecar::nft(),
            iptables: sidecar::iptables(false),
            ip6tables: sidecar::iptables(true),
            envoy: sidecar::envoy(),
            cgroup_bpf: sidecar::cgroup_bpf(),
        },
        findings: Vec::new(),
    };
    report.findings = verdict::judge(&report);
    report
}

fn ktls_sockets() -> Probe<Vec<KtlsSocket>> {
    let sockets = match tcp_sockets() {
        Ok(s) => s,
        Err(e) => return Probe::unknown(e.to_string()),
    };
    let bad: Vec<String> = sockets
        .iter()
        .filter_map(|s| match &s.ulp {
            Some(Err(e)) => Some(format!("{}: {e}", s.local)),
            _ => None,
        })
        .collect();
    if !bad.is_empty() {
        return Probe::unknown(format!("malformed ULP info from the kernel: {}", bad.join("; ")));
    }
    let owners = procs::socket_owners();
    Probe::known(
        sockets
            .iter()
            .filter_map(|s| {
                let tls = s.tls()?;
                Some(KtlsSocket {
                    local: s.local.to_string(),
                    remote: s.remote.to_string(),
                    state: s.state.name().into(),
                    inode: s.inode,
                    tx: tls.tx.label(),
                    rx: tls.rx.label(),
                    version: tls.version_label(),
                    cipher: tls.cipher_label(),
                    owners: owners.get(&s.inode).cloned().unwrap_or_default(),
                })
            })
            .collect(),
    )
}
