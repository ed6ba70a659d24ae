//! Signs that a userspace sidecar mesh runs here: NAT rules that send traffic to a local port
//! (nftables JSON from `nft -j list ruleset`, iptables-save text), running Envoy processes, and
//! eBPF programs attached to cgroups (`bpftool -j cgroup tree`). The parsers are pure; a tool
//! that is missing or fails turns its item into "unknown" with the reason.

use crate::procs::{self, Process};
use crate::report::Probe;
use serde::Serialize;
use serde_json::Value;
use std::net::IpAddr;
use std::process::Command;

/// A rule that diverts connections to a port on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Redirect {
    /// Table (`ip nat`, `nat`, `mangle`).
    pub table: String,
    /// Chain.
    pub chain: String,
    /// `redirect`, `dnat` or `tproxy`.
    pub action: String,
    /// Target port, when a single one.
    pub to_port: Option<u16>,
    /// Target address, when given (loopback for `dnat`).
    pub to_addr: Option<String>,
    /// The rule, shortened to what matters.
    pub rule: String,
}

/// An eBPF program attached to a cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CgroupProgram {
    /// Cgroup path.
    pub cgroup: String,
    /// Program id.
    pub id: u64,
    /// Attach type (`cgroup_inet4_connect`, `sock_ops`, ...).
    pub attach_type: String,
    /// Program name.
    pub name: String,
}

/// Redirects in `nft -j list ruleset` output.
pub fn nft_redirects(json: &str) -> Result<Vec<Redirect>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("nft JSON: {e}"))?;
    let items = doc.get("nftables").and_then(Value::as_array).ok_or("nft JSON: no `nftables` array")?;
    let mut out = Vec::new();
    for rule in items.iter().filter_map(|i| i.get("rule")) {
        let s = |k: &str| rule.get(k).and_then(Value::as_str).unwrap_or("?").to_owned();
        let Some(exprs) = rule.get("expr").and_then(Value::as_array) else { continue };
        let matches: Vec<String> = exprs.iter().filter_map(match_text).collect();
        for expr in exprs {
            let Some((action, target)) = ["redirect", "dnat", "tproxy"].iter().find_map(|a| Some((*a, expr.get(*a)?)))
            else {
                continue;
            };
            let to_port = target.get("port").and_then(Value::as_u64).and_then(|p| u16::try_from(p).ok());
            let to_addr = target.get("addr").and_then(Value::as_str).map(str::to_owned);
            // A dnat elsewhere is ordinary NAT; only a local target means interception.
            if action == "dnat" && !to_addr.as_deref().is_some_and(is_loopback) {
                continue;
            }
            let target_text = match (&to_addr, to_port) {
                (Some(a), Some(p)) => format!(" to {a}:{p}"),
                (None, Some(p)) => format!(" to :{p}"),
                (Some(a), None) => format!(" to {a}"),
                (None, None) => String::new(),
            };
            out.push(Redirect {
                table: format!("{} {}", s("family"), s("table")),
                chain: s("chain"),
                action: action.into(),
                to_port,
                to_addr,
                rule: format!("{}{action}{target_text}", matches.iter().map(|m| format!("{m} ")).collect::<String>()),
            });
        }
    }
    Ok(out)
}

/// `tcp dport 80` from a payload match; `None` for other expressions.
fn match_text(expr: &Value) -> Option<String> {
    let m = expr.get("match")?;
    let payload = m.get("left")?.get("payload")?;
    let right = m.get("right")?;
    let right = right.as_u64().map_or_else(|| right.to_string(), |n| n.to_string());
    Some(format!("{} {} {right}", payload.get("protocol")?.as_str()?, payload.get("field")?.as_str()?))
}

fn is_loopback(addr: &str) -> bool {
    addr.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok_and(|a| match a {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()),
    })
}

/// Redirects in iptables-save / ip6tables-save text (all tables it prints).
pub fn iptables_redirects(text: &str) -> Vec<Redirect> {
    let mut table = String::new();
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix('*') {
            table = t.trim().to_owned();
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let (Some(&"-A"), Some(chain)) = (words.first(), words.get(1)) else { continue };
        let after = |flag: &str| words.iter().position(|w| *w == flag).and_then(|i| words.get(i + 1)).copied();
        let (action, port, addr) = match after("-j") {
            Some("REDIRECT") => ("redirect", after("--to-ports"), None),
            Some("TPROXY") => ("tproxy", after("--on-port"), after("--on-ip")),
            Some("DNAT") => {
                let dest = after("--to-destination").unwrap_or_default();
                let (a, p) = split_host_port(dest);
                if !is_loopback(a) {
                    continue;
                }
                ("dnat", p, Some(a))
            }
            _ => continue,
        };
        out.push(Redirect {
            table: table.clone(),
            chain: (*chain).to_owned(),
            action: action.into(),
            // A range (`15001-15006`) has no single port.
            to_port: port.and_then(|p| p.parse().ok()),
            to_addr: addr.map(str::to_owned),
            rule: words.get(2..).unwrap_or_default().join(" "),
        });
    }
    out
}

/// `127.0.0.1:15001` / `[::1]:15001` / `127.0.0.1` → (host, port).
fn split_host_port(s: &str) -> (&str, Option<&str>) {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, p) = rest.split_once(']').unwrap_or((rest, ""));
        return (h, p.strip_prefix(':'));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, Some(p)),
        _ => (s, None),
    }
}

/// Programs in `bpftool -j cgroup tree` output.
pub fn bpftool_programs(json: &str) -> Result<Vec<CgroupProgram>, String> {
    let doc: Value = serde_json::from_str(json).map_err(|e| format!("bpftool JSON: {e}"))?;
    let groups = doc.as_array().ok_or("bpftool JSON: not an array")?;
    let mut out = Vec::new();
    for g in groups {
        let cgroup = g.get("cgroup").and_then(Value::as_str).unwrap_or("?");
        for p in g.get("programs").and_then(Value::as_array).into_iter().flatten() {
            let text = |k: &str| match p.get(k) {
                Some(Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
                None => String::new(),
            };
            out.push(CgroupProgram {
                cgroup: cgroup.to_owned(),
                id: p.get("id").and_then(Value::as_u64).unwrap_or(0),
                attach_type: text("attach_type"),
                name: text("name"),
            });
        }
    }
    Ok(out)
}

/// Runs a tool and returns its stdout, or why not.
fn run(tool: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(tool).args(args).output().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => format!("{tool} not installed"),
        _ => format!("{tool}: {e}"),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(format!("`{tool} {}` failed ({}): {}", args.join(" "), out.status, err.trim()));
    }
    String::from_utf8(out.stdout).map_err(|_| format!("{tool}: output is not UTF-8"))
}

/// nftables redirects of this network namespace.
pub fn nft() -> Probe<Vec<Redirect>> {
    probe(run("nft", &["-j", "list", "ruleset"]).and_then(|j| nft_redirects(&j)))
}

/// iptables (`ip6` = IPv6) redirects of this network namespace, every table iptables-save shows
/// (TPROXY lives in `mangle`, REDIRECT and DNAT in `nat`).
pub fn iptables(ip6: bool) -> Probe<Vec<Redirect>> {
    let tool = if ip6 { "ip6tables-save" } else { "iptables-save" };
    probe(run(tool, &[]).map(|t| iptables_redirects(&t)))
}

/// Running Envoy processes.
pub fn envoy() -> Probe<Vec<Process>> {
    if !std::path::Path::new("/proc/self").exists() {
        return Probe::unknown("/proc is not mounted");
    }
    Probe::known(procs::running("envoy"))
}

/// eBPF programs attached anywhere under the cgroup v2 hierarchy.
pub fn cgroup_bpf() -> Probe<Vec<CgroupProgram>> {
    let Some(root) = cgroup2_mount() else { return Probe::unknown("no cgroup2 mount in /proc/self/mountinfo") };
    probe(run("bpftool", &["-j", "cgroup", "tree", &root]).and_then(|j| bpftool_programs(&j)))
}

/// The cgroup2 mount point: hybrid hosts mount it at /sys/fs/cgroup/unified, others at /sys/fs/cgroup.
fn cgroup2_mount() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        (post.split_whitespace().next()? == "cgroup2").then(|| pre.split_whitespace().nth(4).map(str::to_owned))?
    })
}

fn probe<T>(r: Result<T, String>) -> Probe<T> {
    r.map_or_else(Probe::unknown, Probe::known)
}

#[cfg(test)]
mod tests;
