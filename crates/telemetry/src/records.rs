//! Connection records: one per mesh connection, joining what is known about it in one place:
//! the mesh leg's address pair, role and direction, peer SPIFFE ID, data-path mode, TLS
//! version and cipher, bytes per direction, TCP facts (`TCP_INFO`, sampled off the data path
//! and at close) and the HTTP requests that ran on it.
//!
//! Owns: the live-record table and the JSON shape of a record ([`RecordView`]) that
//! `/connections`, the closing access-log line and `weir top` share. The data path only bumps
//! the counters a record hands out; reading and joining happen elsewhere.
use crate::Direction;
use prometheus_client::metrics::counter::Counter;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

/// TCP facts of the mesh leg at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcpFacts {
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
    /// RTT variance, microseconds.
    pub rttvar_us: u32,
    /// Segments retransmitted so far.
    pub retransmits: u32,
    /// Segments believed lost now.
    pub lost: u32,
    /// Congestion window, segments.
    pub cwnd: u32,
    /// The kernel's delivery-rate estimate, bytes per second.
    pub delivery_rate: u64,
    /// When this was read (Unix milliseconds).
    pub sampled_unix_ms: u64,
}

/// What the eBPF sockops programs saw of the app's own socket of a captured connection: the
/// app side of the hop, which no userspace proxy sees.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppFacts {
    /// Smoothed RTT of the app's socket, microseconds.
    pub srtt_us: u32,
    /// Its retransmitted segments.
    pub retransmits: u32,
    /// Bytes the app sent that were acknowledged.
    pub bytes_acked: u64,
    /// Bytes the app received.
    pub bytes_received: u64,
}

/// The workload end of a captured connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Captured {
    /// The workload (from the config).
    pub workload: String,
    /// The app socket's own address (the join key with the kernel's per-socket facts).
    pub app: SocketAddr,
}

/// What is fixed when a connection opens.
#[derive(Debug, Clone)]
pub struct RecordStart {
    /// Connection id (the same in every log line and record of this connection).
    pub id: u64,
    /// The node's role (`node`; later `dpu` and `host`).
    pub role: &'static str,
    /// Listener.
    pub direction: Direction,
    /// Mesh leg, this end.
    pub local: SocketAddr,
    /// Mesh leg, the peer node's end.
    pub remote: SocketAddr,
    /// The peer's SPIFFE ID.
    pub peer: String,
    /// Mesh service.
    pub service: String,
    /// `ktls_hw`, `ktls_sw`, `userspace`, or `copy` when a copy-mode listener serves it.
    pub mode: &'static str,
    /// Where the TLS runs whatever the listener does: `ktls_hw`, `ktls_sw` or `userspace`
    /// (the `mode` label of connection metrics).
    pub tls_mode: &'static str,
    /// `TLSv1.3`, …
    pub tls_version: &'static str,
    /// IANA cipher suite name.
    pub cipher: &'static str,
    /// The mesh leg's fd, for sampling `TCP_INFO` while the connection lives.
    pub fd: RawFd,
    /// The workload and app socket, when the kernel path captured the connection.
    pub captured: Option<Captured>,
}

/// One connection's record.
#[derive(Debug)]
pub struct ConnRecord {
    start: RecordStart,
    opened_unix_ms: u64,
    /// Plaintext bytes sent to the peer node (this connection's own total).
    pub to_peer: Counter,
    /// Plaintext bytes received from the peer node.
    pub from_peer: Counter,
    /// HTTP requests finished on this connection.
    pub requests: Counter,
    fd: AtomicI32,
    tcp: Mutex<Option<TcpFacts>>,
    app_tcp: Mutex<Option<AppFacts>>,
    /// Retransmits already added to the Prometheus family (so deltas are added once).
    retransmits_reported: AtomicU32,
}

impl ConnRecord {
    /// A record with zeroed counters; `to_peer`/`from_peer` are the connection's own byte
    /// counters (shared with its pump).
    pub fn new(start: RecordStart, to_peer: Counter, from_peer: Counter) -> Self {
        Self {
            fd: AtomicI32::new(start.fd),
            start,
            opened_unix_ms: unix_ms(SystemTime::now()),
            to_peer,
            from_peer,
            requests: Counter::default(),
            tcp: Mutex::new(None),
            app_tcp: Mutex::new(None),
            retransmits_reported: AtomicU32::new(0),
        }
    }

    /// What was fixed at open.
    pub fn start(&self) -> &RecordStart {
        &self.start
    }

    /// The mesh leg's fd while the connection is open, else `None`.
    pub fn fd(&self) -> Option<RawFd> {
        Some(self.fd.load(Ordering::Acquire)).filter(|fd| *fd >= 0)
    }

    /// Stops sampling through the fd (the socket is about to close).
    pub fn forget_fd(&self) {
        self.fd.store(-1, Ordering::Release);
    }

    /// Stores a sample; returns the retransmits not yet reported (to add to a counter).
    pub fn set_tcp(&self, facts: TcpFacts) -> u32 {
        *self.tcp.lock().unwrap_or_else(|p| p.into_inner()) = Some(facts);
        let before = self.retransmits_reported.fetch_max(facts.retransmits, Ordering::AcqRel);
        facts.retransmits.saturating_sub(before)
    }

    /// The latest sample.
    pub fn tcp(&self) -> Option<TcpFacts> {
        *self.tcp.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stores the kernel's latest facts about the captured app socket.
    pub fn set_app_tcp(&self, facts: AppFacts) {
        *self.app_tcp.lock().unwrap_or_else(|p| p.into_inner()) = Some(facts);
    }

    /// The record as it stands now.
    pub fn view(&self, now: SystemTime) -> RecordView {
        let s = &self.start;
        RecordView {
            id: s.id,
            role: s.role.to_owned(),
            direction: match s.direction {
                Direction::Inbound => "inbound",
                Direction::Outbound => "outbound",
            }
            .to_owned(),
            local: s.local,
            remote: s.remote,
            peer: s.peer.clone(),
            service: s.service.clone(),
            mode: s.mode.to_owned(),
            tls_version: s.tls_version.to_owned(),
            cipher: s.cipher.to_owned(),
            opened_unix_ms: self.opened_unix_ms,
            age_ms: unix_ms(now).saturating_sub(self.opened_unix_ms),
            bytes_to_peer: self.to_peer.get(),
            bytes_from_peer: self.from_peer.get(),
            requests: self.requests.get(),
            tcp: self.tcp(),
            captured: s.captured.clone(),
            app_tcp: *self.app_tcp.lock().unwrap_or_else(|p| p.into_inner()),
            wire: None,
        }
    }
}

/// A record as JSON: `/connections` lists these, the closing access-log line carries the same
/// fields, and `weir top` reads them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordView {
    /// Connection id.
    pub id: u64,
    /// Node role.
    pub role: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Mesh leg, this end.
    pub local: SocketAddr,
    /// Mesh leg, the peer node's end.
    pub remote: SocketAddr,
    /// The peer's SPIFFE ID.
    pub peer: String,
    /// Mesh service.
    pub service: String,
    /// Data-path mode.
    pub mode: String,
    /// TLS version.
    pub tls_version: String,
    /// Cipher suite.
    pub cipher: String,
    /// When it opened (Unix milliseconds).
    pub opened_unix_ms: u64,
    /// How long it has been open.
    pub age_ms: u64,
    /// Plaintext bytes sent to the peer node.
    pub bytes_to_peer: u64,
    /// Plaintext bytes received from the peer node.
    pub bytes_from_peer: u64,
    /// HTTP requests finished on it.
    pub requests: u64,
    /// The latest TCP sample, if one was taken.
    pub tcp: Option<TcpFacts>,
    /// The workload and app socket of a captured connection.
    #[serde(default)]
    pub captured: Option<Captured>,
    /// The kernel's facts about that app socket (sockops), once read.
    #[serde(default)]
    pub app_tcp: Option<AppFacts>,
    /// On a host plane: the DPU's record of the same connection (the wire side: its TCP
    /// facts, TLS mode, the peer's identity), as the DPU last streamed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wire: Option<Box<RecordView>>,
}

/// The records of open connections.
#[derive(Debug, Default)]
pub struct Records {
    live: Mutex<HashMap<u64, Arc<ConnRecord>>>,
}

impl Records {
    /// Adds an open connection's record.
    pub fn insert(&self, record: Arc<ConnRecord>) {
        self.lock().insert(record.start.id, record);
    }

    /// Removes a closing connection's record.
    pub fn remove(&self, id: u64) -> Option<Arc<ConnRecord>> {
        self.lock().remove(&id)
    }

    /// One record by id.
    pub fn get(&self, id: u64) -> Option<Arc<ConnRecord>> {
        self.lock().get(&id).cloned()
    }

    /// Every open connection's record (the table is locked only while the handles are copied).
    pub fn all(&self) -> Vec<Arc<ConnRecord>> {
        self.lock().values().cloned().collect()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no connection is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<ConnRecord>>> {
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start(id: u64) -> RecordStart {
        RecordStart {
            id,
            role: "node",
            direction: Direction::Inbound,
            local: "127.0.0.1:15008".parse().expect("addr"),
            remote: "127.0.0.1:40000".parse().expect("addr"),
            peer: "spiffe://weir.local/ns/default/sa/a".into(),
            service: "echo".into(),
            mode: "userspace",
            tls_mode: "userspace",
            tls_version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256",
            fd: 7,
            captured: None,
        }
    }

    #[test]
    fn retransmits_are_reported_once_and_never_backwards() {
        let r = ConnRecord::new(start(1), Counter::default(), Counter::default());
        let at = |retransmits| TcpFacts { retransmits, ..TcpFacts::default() };
        assert_eq!(r.set_tcp(at(3)), 3);
        assert_eq!(r.set_tcp(at(3)), 0);
        assert_eq!(r.set_tcp(at(5)), 2);
        assert_eq!(r.set_tcp(at(4)), 0, "a lower reading adds nothing");
        assert_eq!(r.tcp().map(|t| t.retransmits), Some(4));
    }

    #[test]
    fn the_view_joins_counters_and_round_trips_as_json() {
        let (to, from) = (Counter::default(), Counter::default());
        let r = Arc::new(ConnRecord::new(start(9), to.clone(), from.clone()));
        to.inc_by(100);
        from.inc_by(7);
        r.requests.inc();
        let table = Records::default();
        table.insert(r.clone());
        let view = table.get(9).expect("present").view(SystemTime::now());
        assert_eq!((view.bytes_to_peer, view.bytes_from_peer, view.requests), (100, 7, 1));
        let back: RecordView = serde_json::from_str(&serde_json::to_string(&view).expect("json")).expect("parse");
        assert_eq!(back, view);
        r.forget_fd();
        assert_eq!(r.fd(), None);
        assert!(table.remove(9).is_some() && table.is_empty());
    }
}
