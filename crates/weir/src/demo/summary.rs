//! The demo's report: what the nodes' own `/metrics` and `/status` say, next to what the
//! clients measured, in a form a person reads.
use super::traffic::{get_text, Small, L7};
use anyhow::bail;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use weir_bench::local_mesh::Mesh;

/// One sample of the Prometheus text format.
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (head, value) = l.rsplit_once(' ')?;
            let (name, labels) = match head.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (head, ""),
            };
            let labels = labels
                .split("\",")
                .filter_map(|kv| kv.split_once("=\""))
                .map(|(k, v)| (k.to_owned(), v.trim_end_matches('"').to_owned()))
                .collect();
            Some(Sample { name: name.to_owned(), labels, value: value.parse().ok()? })
        })
        .collect()
}

fn sum(samples: &[Sample], name: &str, filter: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name && filter.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v)))
        .map(|s| s.value)
        .sum()
}

/// The finished report.
pub struct Report {
    text: String,
    problems: Vec<String>,
}

impl Report {
    pub async fn gather(
        mesh: &Mesh,
        small: Small,
        large: (u64, f64),
        upload: u64,
        impostor: String,
        l7: L7,
    ) -> anyhow::Result<Self> {
        let (client, server) = (
            parse(&get_text(mesh.client_admin, "/metrics").await?.1),
            parse(&get_text(mesh.server_admin, "/metrics").await?.1),
        );
        let status: serde_json::Value = serde_json::from_str(&get_text(mesh.server_admin, "/status").await?.1)?;
        let client_status: serde_json::Value = serde_json::from_str(&get_text(mesh.client_admin, "/status").await?.1)?;
        let mut t = String::new();
        let mut problems = Vec::new();
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let pct = |p: f64| {
            small
                .latencies
                .get(((small.latencies.len() as f64 * p) as usize).min(small.latencies.len().saturating_sub(1)))
                .copied()
                .unwrap_or_default()
        };

        let _ = writeln!(t, "\nIdentities (SPIFFE, one trust domain, built-in CA)");
        let _ = writeln!(
            t,
            "  client node  {}  SVID serial {}",
            mesh.client_id,
            client_status["svid_serial"].as_str().unwrap_or("?")
        );
        let _ = writeln!(
            t,
            "  server node  {}  SVID serial {}",
            mesh.server_id,
            status["svid_serial"].as_str().unwrap_or("?")
        );

        let modes: Vec<&str> = ["ktls_hw", "ktls_sw", "userspace"]
            .into_iter()
            .filter(|m| sum(&client, "weir_connections_opened_total", &[("mode", m)]) > 0.0)
            .collect();
        let _ = writeln!(t, "\nData path");
        let _ = writeln!(t, "  mode          {}", modes.join(", "));
        let _ = writeln!(t, "  why           {}", status["mode_reason"].as_str().unwrap_or("?"));
        let _ = writeln!(t, "  inter-node    TLS 1.3 mTLS always; never plaintext");

        let _ = writeln!(t, "\nTraffic through the mesh (every body checked with SHA-256)");
        let _ = writeln!(
            t,
            "  small requests  {} x GET 1 KiB over {} keep-alive connections: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            small.requests,
            small.connections,
            ms(pct(0.50)),
            ms(pct(0.99)),
            ms(small.latencies.last().copied().unwrap_or_default())
        );
        let _ = writeln!(
            t,
            "  large download  {} MiB in {:.2} s = {:.0} MiB/s",
            large.0 >> 20,
            large.1,
            (large.0 as f64 / (1 << 20) as f64) / large.1
        );
        let _ = writeln!(t, "  upload (echo)   {} MiB", upload >> 20);

        let _ = writeln!(t, "\nMesh connections, as the nodes count them");
        let _ = writeln!(
            t,
            "  {:<7} {:<9} {:<10} {:<40} {:>6} {:>6} {:>14} {:>14}",
            "node", "direction", "mode", "peer", "opened", "closed", "bytes to peer", "bytes from peer"
        );
        for (node, samples, direction, peer) in
            [("client", &client, "Outbound", &mesh.server_id), ("server", &server, "Inbound", &mesh.client_id)]
        {
            for mode in &modes {
                let f = [("direction", direction), ("mode", mode)];
                let _ = writeln!(
                    t,
                    "  {:<7} {:<9} {:<10} {:<40} {:>6} {:>6} {:>14} {:>14}",
                    node,
                    direction.to_lowercase(),
                    mode,
                    peer.as_str(),
                    sum(samples, "weir_connections_opened_total", &f),
                    sum(samples, "weir_connections_closed_total", &f),
                    sum(samples, "weir_bytes_total", &[("direction", direction), ("mode", mode), ("flow", "ToPeer")]),
                    sum(samples, "weir_bytes_total", &[("direction", direction), ("mode", mode), ("flow", "FromPeer")]),
                );
            }
        }
        let (cu, su) =
            (sum(&client, "weir_userspace_bytes_total", &[]), sum(&server, "weir_userspace_bytes_total", &[]));
        let _ = writeln!(t, "  payload bytes through userspace: client {cu}, server {su} (userspace TLS must copy; with kTLS + splice only the server's HTTP heads do)");

        let _ = writeln!(t, "\nHTTP on the server node (heads read, policy on every request, bodies spliced)");
        let classes: Vec<String> = ["2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .map(|c| (c, sum(&server, "weir_http_requests_total", &[("status_class", c)])))
            .filter(|(_, n)| *n > 0.0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = writeln!(t, "  requests        {}", classes.join(", "));
        let _ = writeln!(
            t,
            "  policy          allow {}, deny {} (GET /admin/users answered {} by the server node)",
            sum(&server, "weir_http_policy_verdicts_total", &[("verdict", "allow")]),
            sum(&server, "weir_http_policy_verdicts_total", &[("verdict", "deny")]),
            l7.admin_status
        );
        let _ = writeln!(t, "  trace           the backend received traceparent {}", l7.traceparent);
        let _ = writeln!(
            t,
            "  body bytes through userspace on the HTTP path: {} (userspace TLS decrypts every body; over kTLS they are spliced and this is 0)",
            sum(&server, "weir_http_userspace_body_bytes_total", &[])
        );
        if l7.admin_status != 403 {
            problems.push(format!("GET /admin/users was answered {}, not 403", l7.admin_status));
        }
        if !l7.traceparent.starts_with("00-") {
            problems.push(format!("no trace context reached the backend: {}", l7.traceparent));
        }

        let _ = writeln!(t, "\nRefused");
        let _ = writeln!(
            t,
            "  impostor spiffe://weir.local/ns/demo/sa/impostor -> service echo: server answered {impostor}"
        );
        let refused: Vec<String> = server
            .iter()
            .filter(|s| s.name == "weir_connections_refused_total")
            .map(|s| format!("{}={}", s.labels.get("reason").map_or("?", String::as_str), s.value))
            .collect();
        let _ = writeln!(
            t,
            "  server refusals by reason: {}",
            if refused.is_empty() { "none".into() } else { refused.join(", ") }
        );

        if impostor != "Denied" {
            problems.push(format!("the impostor was not denied: {impostor}"));
        }
        if sum(&server, "weir_connections_refused_total", &[("reason", "not_allowed")]) < 1.0 {
            problems.push("the server did not count the refused impostor".into());
        }
        if sum(&client, "weir_connections_opened_total", &[]) < small.connections as f64 + 2.0 {
            problems.push("the client node counted fewer connections than were made".into());
        }
        let _ = writeln!(
            t,
            "\nResult: {}",
            if problems.is_empty() { "OK".to_owned() } else { format!("FAILED: {}", problems.join("; ")) }
        );
        Ok(Self { text: t, problems })
    }

    pub fn verdict(&self) -> anyhow::Result<()> {
        if self.problems.is_empty() {
            Ok(())
        } else {
            bail!("demo checks failed: {}", self.problems.join("; "))
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}
