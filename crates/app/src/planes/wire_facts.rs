//! The DPU's wire-side records, on both planes.
//!
//! On the DPU: records of host-channel connections that closed wait in an outbox until the
//! next control line carries them to the host plane (bounded; overflow is counted, not
//! silent). On the host plane: the records the DPU streams are joined to the host's own record
//! of the same connection. The join key is the host-channel leg's ephemeral end, which the DPU
//! records as the connection's `captured.app`: outbound the host's end (the host plane's local
//! address), inbound the DPU's (the host plane's remote address); see [`leg_key`]. Wire
//! retransmits are counted per workload (outbound: the host's workload; inbound: the remote
//! caller) and service as they arrive.
use crate::core::conn::Shared;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Mutex;
use weir_telemetry::records::RecordView;
use weir_telemetry::{Metrics, WireLabels};

/// Closed records the DPU holds for the host plane at most.
const OUTBOX_CAP: usize = 10_000;
/// DPU records the host plane holds at most (its own records take theirs when they close).
const JOINED_CAP: usize = 65_536;

/// The DPU's closed host-channel records not yet sent.
#[derive(Default)]
pub(crate) struct Outbox(Mutex<VecDeque<RecordView>>);

impl Outbox {
    /// Queues a closed record; the oldest goes when the queue is full.
    pub fn push(&self, view: RecordView, metrics: &Metrics) {
        let mut q = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() >= OUTBOX_CAP {
            q.pop_front();
            metrics.plane_records_dropped.inc();
        }
        q.push_back(view);
    }

    /// Everything queued.
    pub fn take(&self) -> Vec<RecordView> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).drain(..).collect()
    }
}

/// The host plane's latest DPU record per connection, by the host's end of the leg, and the
/// wire retransmits already counted for each.
#[derive(Default)]
pub(crate) struct WireFacts(Mutex<Joined>);

#[derive(Default)]
struct Joined {
    views: HashMap<SocketAddr, RecordView>,
    /// Until the DPU's closing record: a view taken early by the host's close must not make the
    /// next one count its retransmits again.
    counted: HashMap<SocketAddr, u32>,
}

impl WireFacts {
    /// The DPU's record of the connection whose host-channel leg starts at `host_end`.
    pub fn of(&self, host_end: SocketAddr) -> Option<RecordView> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).views.get(&host_end).cloned()
    }

    /// Takes it out, when the host's own record of that connection closes.
    pub fn take(&self, host_end: SocketAddr) -> Option<RecordView> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).views.remove(&host_end)
    }
}

/// The host plane's key of one of its own records for the join: the host-channel leg's end
/// that is unique per connection (the other end is a listener).
pub(crate) fn leg_key(view: &RecordView) -> SocketAddr {
    match view.direction.as_str() {
        "inbound" => view.remote,
        _ => view.local,
    }
}

/// Takes one batch from the DPU: counts new wire retransmits, and keeps the latest record of
/// each connection while the host's own record of it is open (its close takes it).
pub(crate) fn merge(shared: &Shared, wire_facts: &WireFacts, open: Vec<RecordView>, closed: Vec<RecordView>) {
    let host_open: std::collections::HashSet<SocketAddr> = match closed.is_empty() {
        true => Default::default(),
        false => {
            let now = std::time::SystemTime::now();
            shared.records.all().iter().map(|r| leg_key(&r.view(now))).collect()
        }
    };
    let mut joined = wire_facts.0.lock().unwrap_or_else(|p| p.into_inner());
    let Joined { views, counted } = &mut *joined;
    let batch = open.into_iter().map(|v| (v, false)).chain(closed.into_iter().map(|v| (v, true)));
    for (view, is_closed) in batch {
        let Some(captured) = &view.captured else { continue };
        let key = captured.app;
        let now = view.tcp.map_or(0, |t| t.retransmits);
        let before = if is_closed { counted.remove(&key) } else { counted.insert(key, now) }.unwrap_or(0);
        if now > before {
            let labels = WireLabels { workload: captured.workload.clone(), service: view.service.clone() };
            shared.metrics.wire_tcp_retransmits.get_or_create(&labels).inc_by(u64::from(now - before));
        }
        if is_closed && !host_open.contains(&key) {
            views.remove(&key);
            continue;
        }
        if views.len().max(counted.len()) >= JOINED_CAP {
            // The host side of these never closed, or the DPU's never did: start afresh.
            tracing::warn!(entries = views.len().max(counted.len()), "too many unmatched DPU records: dropped");
            views.clear();
            counted.clear();
        }
        views.insert(key, view);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use weir_telemetry::records::{Captured, TcpFacts};

    #[test]
    fn the_outbox_keeps_the_newest_and_counts_what_it_drops() {
        let shared = crate::core::conn::tests::shared();
        let outbox = Outbox::default();
        for n in 0..OUTBOX_CAP as u64 + 3 {
            outbox.push(view(n, "10.0.0.2:40000", 0), &shared.metrics);
        }
        let taken = outbox.take();
        assert_eq!(taken.len(), OUTBOX_CAP);
        assert_eq!(taken[0].id, 3, "the oldest went first");
        assert_eq!(shared.metrics.plane_records_dropped.get(), 3);
        assert!(outbox.take().is_empty());
    }

    #[test]
    fn wire_retransmits_are_counted_once_and_joined_by_the_host_end() {
        let shared = crate::core::conn::tests::shared();
        let wire_facts = WireFacts::default();
        let a = "10.0.0.2:40000";
        merge(&shared, &wire_facts, vec![view(1, a, 2)], vec![]);
        merge(&shared, &wire_facts, vec![view(1, a, 5)], vec![]);
        let joined = wire_facts.of(a.parse().expect("addr")).expect("joined");
        assert_eq!(joined.tcp.map(|t| t.retransmits), Some(5));
        // The host's record closed first and took the view; the DPU's closing record follows.
        assert!(wire_facts.take(a.parse().expect("addr")).is_some());
        merge(&shared, &wire_facts, vec![], vec![view(1, a, 7)]);
        assert!(wire_facts.of(a.parse().expect("addr")).is_none(), "no host record: not kept");
        let labels = WireLabels { workload: "spiffe://weir.local/ns/shop/sa/cart".into(), service: "orders".into() };
        assert_eq!(shared.metrics.wire_tcp_retransmits.get_or_create(&labels).get(), 7);
    }

    fn view(id: u64, app: &str, retransmits: u32) -> RecordView {
        RecordView {
            id,
            role: "dpu".into(),
            direction: "outbound".into(),
            local: "192.0.2.1:50000".parse().expect("addr"),
            remote: "192.0.2.9:15008".parse().expect("addr"),
            peer: "spiffe://weir.local/ns/shop/sa/orders".into(),
            service: "orders".into(),
            mode: "userspace".into(),
            tls_version: "TLSv1_3".into(),
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            opened_unix_ms: 0,
            age_ms: 0,
            bytes_to_peer: 0,
            bytes_from_peer: 0,
            requests: 0,
            tcp: Some(TcpFacts { retransmits, ..TcpFacts::default() }),
            captured: Some(Captured {
                workload: "spiffe://weir.local/ns/shop/sa/cart".into(),
                app: app.parse().expect("addr"),
            }),
            app_tcp: None,
            wire: None,
        }
    }
}
