//! `weir scan`: runs weir-probe and prints its report, as tables for a person or as JSON
//! (schema 2, docs/scan.schema.json) for a program.

use std::fmt::Write as _;
use std::process::ExitCode;
use weir_probe::verdict::Finding;
use weir_probe::{Probe, Report};

/// Scans the host and prints the report. Exits 0 whatever the findings are: an unknown item is
/// part of the report, not a failure of the command.
pub fn run(json: bool, admin: Option<std::net::SocketAddr>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = rt.block_on(weir_probe::scan());
    if let Some(admin) = admin {
        report.findings.extend(node_findings(admin));
    }
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: encoding the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        print!("{}", human(&report));
    }
    ExitCode::SUCCESS
}

/// What the node at `admin` knows that the kernel does not say: queue pairs connected with no
/// recorded bootstrap. A node that cannot be asked is a finding too, not a failed scan.
fn node_findings(admin: std::net::SocketAddr) -> Vec<Finding> {
    let report = weir_bench::http_client::get(admin, "/rdma")
        .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).map_err(Into::into));
    let report = match report {
        Ok(r) => r,
        Err(e) => {
            return vec![Finding {
                kind: "node_unreachable".into(),
                subject: format!("node at {admin}: {e:#}"),
                sidecar: "-".into(),
                weir: "the scan shows only what the kernel says".into(),
            }]
        }
    };
    unauthorized_qps(&report)
}

/// A finding for every queue pair the node's `/rdma` report flags.
fn unauthorized_qps(report: &serde_json::Value) -> Vec<Finding> {
    let qps = report["queue_pairs"].as_array().cloned().unwrap_or_default();
    qps.iter()
        .filter(|q| q["authorized"] == false)
        .map(|q| Finding {
            kind: "rdma_unauthorized_qp".into(),
            subject: format!(
                "RDMA queue pair {} {} (pid {} {}) of workload {} connected with no recorded bootstrap",
                q["device"].as_str().unwrap_or("?"),
                q["lqpn"],
                q["pid"],
                q["comm"].as_str().unwrap_or("?"),
                q["workload"].as_str().unwrap_or("none"),
            ),
            sidecar: "invisible to a sidecar: it never saw the bootstrap nor the session".into(),
            weir:
                "flagged by the node (weir_rdma_unauthorized_qps, log line): its workload set up RDMA outside the mesh"
                    .into(),
        })
        .collect()
}

fn show<T>(p: &Probe<T>, f: impl Fn(&T) -> String) -> String {
    match p {
        Probe::Known { value } => f(value),
        Probe::Unknown { reason } => format!("unknown: {reason}"),
    }
}

/// The report as plain-text sections. `writeln!` into a String cannot fail.
fn human(r: &Report) -> String {
    let mut o = String::new();
    let k = &r.kernel;
    let _ = writeln!(o, "KERNEL");
    let _ = writeln!(o, "  release        {}", show(&k.release, Clone::clone));
    let _ = writeln!(
        o,
        "  kTLS           {}",
        show(&k.ktls, |v| format!("{}: {}", if v.available { "available" } else { "unavailable" }, v.reason))
    );
    let _ = writeln!(
        o,
        "  TLS 1.3 rekey  {}",
        show(&k.tls13_rekey, |v| format!("{} ({})", if v.supported { "yes" } else { "no" }, v.rule))
    );
    let _ = writeln!(
        o,
        "  gcm(aes)       {}",
        show(&k.gcm_aes, |v| format!("{} (module {}, priority {})", v.driver, v.module, v.priority))
    );

    let _ = writeln!(o, "\nINTERFACES (ethtool offload features)");
    match &r.interfaces {
        Probe::Known { value } if value.is_empty() => {
            let _ = writeln!(o, "  none");
        }
        Probe::Known { value } => {
            let names = value.first().map(|i| i.features.iter().map(|f| f.name.as_str()).collect::<Vec<_>>());
            let _ = writeln!(
                o,
                "  {:<16}{}",
                "interface",
                names.unwrap_or_default().iter().map(|n| format!("{n:<20}")).collect::<String>().trim_end()
            );
            for i in value {
                let cells: String = i.features.iter().map(|f| format!("{:<20}", f.label())).collect();
                let _ = writeln!(o, "  {:<16}{}", i.name, cells.trim_end());
            }
        }
        Probe::Unknown { reason } => {
            let _ = writeln!(o, "  unknown: {reason}");
        }
    }

    let _ = writeln!(o, "\nkTLS SOCKETS");
    match &r.ktls_sockets {
        Probe::Known { value } if value.is_empty() => {
            let _ = writeln!(o, "  none");
        }
        Probe::Known { value } => {
            let _ = writeln!(
                o,
                "  {:<24}{:<24}{:<10}{:<10}{:<6}{:<20}owner",
                "local", "remote", "TX", "RX", "TLS", "cipher"
            );
            for s in value {
                let owners: Vec<_> = s.owners.iter().map(|p| format!("{} {}", p.pid, p.comm)).collect();
                let owner = if owners.is_empty() { "?".to_owned() } else { owners.join(", ") };
                let _ = writeln!(
                    o,
                    "  {:<24}{:<24}{:<10}{:<10}{:<6}{:<20}{owner}",
                    s.local, s.remote, s.tx, s.rx, s.version, s.cipher
                );
            }
        }
        Probe::Unknown { reason } => {
            let _ = writeln!(o, "  unknown: {reason}");
        }
    }

    let _ = writeln!(o, "\nTLS_STAT (/proc/net/tls_stat)");
    let _ = writeln!(
        o,
        "  {}",
        show(&r.tls_stat, |c| c.iter().map(|c| format!("{} {}", c.name, c.value)).collect::<Vec<_>>().join(", "))
    );

    let _ = writeln!(o, "\nRDMA");
    let _ = writeln!(
        o,
        "  {}",
        show(&r.rdma, |d| {
            if d.is_empty() {
                return "no RDMA devices".to_owned();
            }
            d.iter()
                .map(|d| {
                    let ports: Vec<_> = d
                        .ports
                        .iter()
                        .map(|p| format!("port {} {} ({} counters)", p.port, p.link_layer, p.counters.len()))
                        .collect();
                    format!("{}: {}", d.name, ports.join(", "))
                })
                .collect::<Vec<_>>()
                .join("\n  ")
        })
    );

    let _ = writeln!(o, "\nRDMA USE (queue pairs by owning cgroup; a Weir workload is <kernel.cgroup>/<name>)");
    let _ = writeln!(
        o,
        "  {}",
        show(&r.rdma_use, |uses| {
            if uses.is_empty() {
                return "no queue pairs".to_owned();
            }
            let lines = |p: &Probe<Vec<String>>| show(p, |l| l.join("; "));
            uses.iter()
                .map(|u| {
                    let (current, max) = (lines(&u.current), lines(&u.max));
                    format!(
                        "{}: {} QPs ({} connected), current {current}, max {max}",
                        u.cgroup, u.queue_pairs, u.connected
                    )
                })
                .collect::<Vec<_>>()
                .join("\n  ")
        })
    );

    let sc = &r.sidecar;
    let _ = writeln!(o, "\nSIDECAR SIGNS");
    for (name, p) in [("nft", &sc.nft), ("iptables", &sc.iptables), ("ip6tables", &sc.ip6tables)] {
        let text = show(p, |v| {
            if v.is_empty() {
                return "no redirect to a local port".to_owned();
            }
            v.iter().map(|d| format!("{} {}: {}", d.table, d.chain, d.rule)).collect::<Vec<_>>().join("; ")
        });
        let _ = writeln!(o, "  {name:<15}{text}");
    }
    let envoy = show(&sc.envoy, |v| {
        if v.is_empty() {
            return "none running".to_owned();
        }
        v.iter().map(|p| format!("pid {} {}", p.pid, p.comm)).collect::<Vec<_>>().join(", ")
    });
    let _ = writeln!(o, "  {:<15}{envoy}", "envoy");
    let bpf = show(&sc.cgroup_bpf, |v| {
        if v.is_empty() {
            return "no programs attached".to_owned();
        }
        v.iter().map(|p| format!("{} {} on {}", p.attach_type, p.name, p.cgroup)).collect::<Vec<_>>().join("; ")
    });
    let _ = writeln!(o, "  {:<15}{bpf}", "cgroup eBPF");

    let _ = writeln!(o, "\nVERDICT");
    if r.findings.is_empty() {
        let _ = writeln!(o, "  nothing here that a sidecar could not see");
    }
    for f in &r.findings {
        let _ = writeln!(o, "  * {}\n      sidecar: {}\n      Weir:    {}", f.subject, f.sidecar, f.weir);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queue_pairs_the_node_flagged_become_findings() {
        let report = serde_json::json!({
            "unavailable": null,
            "intents": [],
            "queue_pairs": [
                {"device": "rxe0", "lqpn": 17, "pid": 300, "comm": "ibv_rc_pingpong", "workload": "rogue", "authorized": false},
                {"device": "rxe0", "lqpn": 18, "pid": 301, "comm": "ibv_rc_pingpong", "workload": "trainer", "authorized": true},
                {"device": "rxe0", "lqpn": 19, "pid": 302, "comm": "ibv_rc_pingpong", "workload": null, "authorized": null}
            ]
        });
        let found = unauthorized_qps(&report);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].kind, "rdma_unauthorized_qp");
        assert!(
            found[0].subject.contains("rxe0 17 (pid 300 ibv_rc_pingpong) of workload rogue"),
            "{}",
            found[0].subject
        );
    }
}
