//! `weir top`: a live table of a node's open mesh connections and their joined L4/L7 facts
//! (from the admin endpoint's `/connections`), sorted by what matters in an incident.
use anyhow::Context;
use std::collections::HashMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use weir_telemetry::records::RecordView;

/// `weir top` arguments.
#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// The node's admin endpoint.
    #[arg(long, default_value = "127.0.0.1:15000")]
    admin: SocketAddr,
    /// Sort key (descending): rate, bytes, rtt, retransmits, requests, age, id.
    #[arg(long, default_value = "rate")]
    sort: SortKey,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Print one table and exit (for scripts).
    #[arg(long)]
    once: bool,
    /// Rows at most.
    #[arg(long, default_value_t = 40)]
    rows: usize,
}

/// What the table is sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    /// Bytes per second since the last refresh, both directions.
    Rate,
    /// Bytes so far, both directions.
    Bytes,
    /// Smoothed RTT.
    Rtt,
    /// Retransmitted segments.
    Retransmits,
    /// HTTP requests.
    Requests,
    /// Time open.
    Age,
    /// Connection id.
    Id,
}

impl SortKey {
    fn from_key(c: char) -> Option<Self> {
        Some(match c {
            'r' => Self::Rate,
            'b' => Self::Bytes,
            't' => Self::Rtt,
            'x' => Self::Retransmits,
            'q' => Self::Requests,
            'a' => Self::Age,
            'i' => Self::Id,
            _ => return None,
        })
    }
}

/// Runs until interrupted (or once).
pub fn run(args: TopArgs) -> anyhow::Result<()> {
    if args.once {
        let rows = fetch(args.admin)?;
        print!("{}", render(&rows, &HashMap::new(), args.sort, args.rows, args.admin));
        return Ok(());
    }
    // Keys arrive as lines (no raw terminal mode): a letter and Enter changes the sort.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut sort = args.sort;
    let mut previous: HashMap<u64, (u64, Instant)> = HashMap::new();
    let every = Duration::from_secs_f64(args.interval.max(0.1));
    loop {
        let frame = match fetch(args.admin) {
            Ok(rows) => {
                let rates = rates(&rows, &previous);
                previous = rows.iter().map(|r| (r.id, (r.bytes_to_peer + r.bytes_from_peer, Instant::now()))).collect();
                render(&rows, &rates, sort, args.rows, args.admin)
            }
            Err(e) => format!("weir top: {e:#}\n"),
        };
        // Clear the screen and home the cursor, then draw.
        println!("\x1b[2J\x1b[H{frame}keys: r rate  b bytes  t rtt  x retransmits  q requests  a age  i id (then Enter); Ctrl-C quits");
        std::io::stdout().flush()?;
        if let Ok(line) = rx.recv_timeout(every) {
            if let Some(key) = line.trim().chars().next().and_then(SortKey::from_key) {
                sort = key;
            }
        }
    }
}

/// Bytes per second of each connection since the previous refresh.
fn rates(rows: &[RecordView], previous: &HashMap<u64, (u64, Instant)>) -> HashMap<u64, f64> {
    rows.iter()
        .filter_map(|r| {
            let (bytes, at) = previous.get(&r.id)?;
            let secs = at.elapsed().as_secs_f64().max(1e-3);
            Some((r.id, (r.bytes_to_peer + r.bytes_from_peer).saturating_sub(*bytes) as f64 / secs))
        })
        .collect()
}

fn fetch(admin: SocketAddr) -> anyhow::Result<Vec<RecordView>> {
    let body = weir_bench::http_client::get(admin, "/connections")?;
    serde_json::from_str(&body).with_context(|| format!("{admin}/connections: not a list of connection records"))
}

fn render(rows: &[RecordView], rates: &HashMap<u64, f64>, sort: SortKey, limit: usize, admin: SocketAddr) -> String {
    let mut rows: Vec<&RecordView> = rows.iter().collect();
    let rate = |r: &RecordView| rates.get(&r.id).copied().unwrap_or(0.0);
    let tcp = |r: &RecordView| r.tcp.unwrap_or_default();
    match sort {
        SortKey::Rate => rows.sort_by(|a, b| rate(b).total_cmp(&rate(a))),
        SortKey::Bytes => rows.sort_by_key(|r| std::cmp::Reverse(r.bytes_to_peer + r.bytes_from_peer)),
        SortKey::Rtt => rows.sort_by_key(|r| std::cmp::Reverse(tcp(r).srtt_us)),
        SortKey::Retransmits => rows.sort_by_key(|r| std::cmp::Reverse(tcp(r).retransmits)),
        SortKey::Requests => rows.sort_by_key(|r| std::cmp::Reverse(r.requests)),
        SortKey::Age => rows.sort_by_key(|r| std::cmp::Reverse(r.age_ms)),
        SortKey::Id => rows.sort_by_key(|r| r.id),
    }
    let wire = |r: &RecordView| r.wire.as_ref().and_then(|w| w.tcp).map_or(0, |t| u64::from(t.retransmits));
    let retransmits: u64 = rows.iter().map(|r| u64::from(tcp(r).retransmits) + wire(r)).sum();
    let mut out = format!(
        "weir top: {admin}: {} open mesh connections, {retransmits} retransmits; sorted by {sort:?}\n",
        rows.len()
    );
    out.push_str(&format!(
        "{:>6} {:<3} {:<28} {:<12} {:<9} {:>7} {:>9} {:>9} {:>10} {:>6} {:>8} {:>6} {:>5}\n",
        "ID", "DIR", "PEER", "SERVICE", "MODE", "AGE", "SENT", "RECV", "RATE", "REQS", "RTT", "RETR", "CWND"
    ));
    for r in rows.iter().take(limit) {
        let t = tcp(r);
        out.push_str(&format!(
            "{:>6} {:<3} {:<28} {:<12} {:<9} {:>7} {:>9} {:>9} {:>10} {:>6} {:>8} {:>6} {:>5}\n",
            r.id,
            if r.direction == "inbound" { "in" } else { "out" },
            short_id(&r.peer, 28),
            clip(&r.service, 12),
            r.mode,
            age(r.age_ms),
            bytes(r.bytes_to_peer as f64),
            bytes(r.bytes_from_peer as f64),
            format!("{}/s", bytes(rate(r))),
            r.requests,
            r.tcp.map_or("-".into(), |t| format!("{:.2}ms", f64::from(t.srtt_us) / 1000.0)),
            t.retransmits,
            t.cwnd,
        ));
        if let Some(w) = &r.wire {
            // A host plane's connection: the DPU's leg on the wire, as the DPU reported it.
            let wt = w.tcp.unwrap_or_default();
            out.push_str(&format!(
                "{:>6} └ wire: {} {} {:>8} retr {}\n",
                "",
                short_id(&w.peer, 28),
                w.mode,
                w.tcp.map_or("-".into(), |t| format!("{:.2}ms", f64::from(t.srtt_us) / 1000.0)),
                wt.retransmits
            ));
        }
    }
    if rows.len() > limit {
        out.push_str(&format!("… {} more\n", rows.len() - limit));
    }
    out
}

/// The SPIFFE ID without the scheme and trust domain when it still does not fit: its tail is
/// what tells workloads apart.
fn short_id(id: &str, width: usize) -> String {
    let path = id.strip_prefix("spiffe://").and_then(|s| s.split_once('/')).map_or(id, |(_, p)| p);
    let shown = if id.len() <= width { id } else { path };
    clip(shown, width)
}

fn clip(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let tail: String = s.chars().rev().take(width - 1).collect::<Vec<_>>().into_iter().rev().collect();
    format!("…{tail}")
}

fn age(ms: u64) -> String {
    match ms / 1000 {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{:02}s", s / 60, s % 60),
        s => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
    }
}

fn bytes(n: f64) -> String {
    const UNITS: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0}{}", UNITS[u])
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code")]
mod tests {
    use super::*;
    use weir_telemetry::records::TcpFacts;

    fn row(id: u64, bytes: u64, srtt_us: u32, retransmits: u32) -> RecordView {
        RecordView {
            id,
            role: "node".into(),
            direction: "inbound".into(),
            local: "127.0.0.1:15008".parse().unwrap(),
            remote: "127.0.0.1:40000".parse().unwrap(),
            peer: "spiffe://weir.local/ns/default/sa/a-rather-long-service-account".into(),
            service: "echo".into(),
            mode: "ktls_sw".into(),
            tls_version: "TLSv1_3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            opened_unix_ms: 0,
            age_ms: 61_000,
            bytes_to_peer: bytes,
            bytes_from_peer: 0,
            requests: 0,
            tcp: Some(TcpFacts { srtt_us, retransmits, ..TcpFacts::default() }),
            captured: None,
            app_tcp: None,
            wire: None,
        }
    }

    #[test]
    fn a_host_planes_connection_shows_its_wire_leg() {
        let mut host = row(1, 10, 50, 0);
        let mut wire = row(9, 10, 2500, 38);
        wire.peer = "spiffe://weir.local/ns/prod/sa/payments".into();
        wire.mode = "ktls_sw".into();
        host.wire = Some(Box::new(wire));
        let out = render(&[host], &HashMap::new(), SortKey::Id, 10, "127.0.0.1:15000".parse().unwrap());
        let line = out.lines().find(|l| l.contains("└ wire:")).expect(&out);
        assert!(line.contains("ns/prod/sa/payments ktls_sw") && line.ends_with("2.50ms retr 38"), "{line}");
        assert!(out.starts_with("weir top: 127.0.0.1:15000: 1 open mesh connections, 38 retransmits"), "{out}");
    }

    #[test]
    fn sorts_by_the_chosen_key_and_shortens_long_ids() {
        let rows = [row(1, 10, 900, 0), row(2, 5000, 100, 7), row(3, 20, 5000, 1)];
        let admin = "127.0.0.1:15000".parse().unwrap();
        let ids = |text: String| -> Vec<u64> {
            text.lines().skip(2).filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
        };
        assert_eq!(ids(render(&rows, &HashMap::new(), SortKey::Rtt, 10, admin)), [3, 1, 2]);
        assert_eq!(ids(render(&rows, &HashMap::new(), SortKey::Retransmits, 10, admin)), [2, 3, 1]);
        assert_eq!(ids(render(&rows, &HashMap::new(), SortKey::Bytes, 2, admin)), [2, 3]);
        let text = render(&rows, &HashMap::new(), SortKey::Id, 10, admin);
        assert!(text.contains("8 retransmits") && text.contains("1m01s") && text.contains("4.9K"), "{text}");
        assert!(text.contains("…"), "a long SPIFFE ID is clipped from the left: {text}");
    }
}
