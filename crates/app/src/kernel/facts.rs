//! Off the data path, once a second: reads the kernel path's per-connection facts and
//! counters and folds them into metrics (each closed connection exactly once).
use crate::core::conn::Shared;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use weir_telemetry::records::AppFacts;
use weir_telemetry::{HttpMethodLabels, KernelBytesLabels, KernelRefusedLabels, WorkloadLabels, WorkloadPeerLabels};

const TCP_CLOSE: u32 = 7;

/// Runs until the task is aborted.
pub(crate) async fn collect(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        fold(&shared, &mut shared.kernel_reported.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// One pass; public to the crate so a scrape can force it.
pub(crate) fn fold(shared: &Shared, reported: &mut HashSet<u64>) {
    let mut guard = shared.kernel.lock().unwrap_or_else(|p| p.into_inner());
    let Some(kernel) = guard.as_mut() else { return };
    let k = &shared.metrics.kernel;
    let name = |id: u32| shared.workloads.get(&id).map_or_else(|| "none".to_owned(), |w| w.name.clone());
    match kernel.connections() {
        Ok(conns) => {
            join_captured(shared, &conns);
            let present: HashSet<u64> = conns.iter().map(|c| c.cookie).collect();
            for c in conns.iter().filter(|c| c.state == TCP_CLOSE && c.workload != 0) {
                if !reported.insert(c.cookie) {
                    continue;
                }
                let workload = name(c.workload);
                // Bounded: mesh peers come from the config, everything else is one value.
                let peer = match shared.captured.get(&c.peer) {
                    Some(route) if c.captured => route.peer_id.to_string(),
                    _ => "external".to_owned(),
                };
                let labels = WorkloadPeerLabels { workload: workload.clone(), peer: peer.clone() };
                k.srtt_us.get_or_create(&labels).observe(f64::from(c.srtt_us.0));
                k.retransmits.get_or_create(&labels).inc_by(u64::from(c.retransmits));
                let bytes = |direction| KernelBytesLabels { workload: workload.clone(), peer: peer.clone(), direction };
                k.bytes.get_or_create(&bytes("acked")).inc_by(c.bytes_acked);
                k.bytes.get_or_create(&bytes("received")).inc_by(c.bytes_received);
            }
            // Entries the LRU map dropped can never be reported twice: forget them.
            reported.retain(|c| present.contains(c));
        }
        Err(e) => tracing::warn!(error = %e, "reading kernel connection facts"),
    }
    for id in shared.workloads.keys() {
        if let Ok(n) = kernel.open_connections(*id) {
            k.open.get_or_create(&WorkloadLabels { workload: name(*id) }).set(n);
        }
    }
    if let Ok(c) = kernel.counters() {
        // Kernel counters are totals: bring ours level with them.
        for (reason, total) in [("deny", c.denied), ("limit", c.limited), ("map_full", c.map_full)] {
            let counter = k.refused.get_or_create(&KernelRefusedLabels { reason });
            let new = total.saturating_sub(counter.get());
            if reason == "map_full" && new > 0 {
                tracing::error!(
                    refused = new,
                    "kernel socket storage full: new workload connections refused (fail closed)"
                );
            }
            counter.inc_by(new);
        }
        k.captured.inc_by(c.captured.saturating_sub(k.captured.get()));
    }
    if let Ok(counts) = kernel.http_requests() {
        for (id, method, total) in counts {
            let counter = k.http_requests.get_or_create(&HttpMethodLabels { workload: name(id), method });
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}

/// Gives each open captured connection's record the kernel's facts about the app's own socket
/// (its address is the join key: the capture listener saw it as the peer).
fn join_captured(shared: &Shared, conns: &[weir_ebpf::ConnFacts]) {
    let records: Vec<_> = shared.records.all().into_iter().filter(|r| r.start().captured.is_some()).collect();
    if records.is_empty() {
        return;
    }
    let by_app: std::collections::HashMap<_, _> =
        conns.iter().filter(|c| c.captured && c.workload != 0).map(|c| (c.local, c)).collect();
    for r in records {
        let Some(c) = r.start().captured.as_ref().and_then(|cap| by_app.get(&cap.app)) else { continue };
        r.set_app_tcp(AppFacts {
            srtt_us: c.srtt_us.0,
            retransmits: c.retransmits,
            bytes_acked: c.bytes_acked,
            bytes_received: c.bytes_received,
        });
    }
}

/// The kernel's facts about open and recently closed workload connections, as JSON lines for
/// `/kernel/connections`.
pub(crate) fn connections_json(shared: &Shared) -> String {
    let mut guard = shared.kernel.lock().unwrap_or_else(|p| p.into_inner());
    let Some(kernel) = guard.as_mut() else { return "kernel path off\n".into() };
    let conns = kernel.connections().unwrap_or_default();
    let mut out = String::new();
    for c in conns.iter().filter(|c| c.workload != 0) {
        let workload = shared.workloads.get(&c.workload).map_or("none", |w| w.name.as_str());
        let line = serde_json::json!({
            "cookie": c.cookie, "workload": workload, "local": c.local.to_string(), "remote": c.remote.to_string(),
            "peer": c.peer.to_string(), "captured": c.captured,
            "srtt_us": c.srtt_us.0, "min_srtt_us": c.srtt_us.1, "max_srtt_us": c.srtt_us.2,
            "retransmits": c.retransmits, "bytes_acked": c.bytes_acked, "bytes_received": c.bytes_received, "state": c.state,
        });
        out.push_str(&line.to_string());
        out.push('\n');
    }
    out
}
