//! The control connection between a host plane and its DPU (roles `host` and `dpu`).
//!
//! One mTLS connection: each plane presents its own SVID and checks the other's configured
//! SPIFFE ID. Over it each plane sends, every interval, one JSON line with its certificate
//! state (SVID serial and validity, last rotation attempt and result, its own readiness); the
//! DPU adds the records of its connections that closed since (`records`). What the other
//! plane last said is half of this plane's readiness: a plane whose rotation failed, whose SVID
//! is near expiry, or that stopped reporting makes the other one unready, naming the plane and
//! the reason. The host connects (and reconnects); the DPU listens.
use crate::core::conn::{Refusal, Shared};
use crate::core::role::Role;
use crate::planes::plane::Plane;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use weir_config::PlaneLink;
use weir_telemetry::records::RecordView;
use weir_telemetry::Direction;

/// The longest line either plane accepts: a state line is a few hundred bytes; a line of
/// connection records is capped by the sender well below this.
const MAX_LINE: u64 = 1 << 20;
/// Intervals without a line before the other plane counts as silent.
const SILENT_AFTER: u32 = 3;

/// What one plane says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PlaneState {
    /// `host` or `dpu`.
    pub plane: String,
    /// The plane's SPIFFE ID.
    pub id: String,
    /// Its SVID's serial and validity (unix seconds).
    pub serial: String,
    pub not_before: u64,
    pub not_after: u64,
    /// The last rotation attempt (unix seconds) and its error, if it failed.
    pub last_rotation: Option<u64>,
    pub last_rotation_error: Option<String>,
    /// Why the plane is not ready by its own checks (every SVID it holds), if it is not.
    pub problem: Option<String>,
    /// The services whose HTTP heads this plane handles on the host-channel path (L7
    /// placement): on a host, those its L7 routing sends to the DPU; on a DPU, its routes with
    /// `protocol = "http"`. Both planes naming one is a conflict: a rule set runs once.
    #[serde(default)]
    pub l7_services: Vec<String>,
    /// The fingerprint of the newest host channel key this plane has: on the host, the one it
    /// installed (the DPU seals inbound preambles with a new key once the host names it here).
    #[serde(default)]
    pub channel_key: Option<String>,
}

/// One line on the control connection. (No `Debug`: a key line holds a secret.)
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Line {
    State(PlaneState),
    /// The DPU's newest host channel key, hex (see `channel_key`).
    Key {
        key: String,
    },
    /// The DPU's records of host-channel connections: open now, and closed since the last line.
    Records {
        open: Vec<RecordView>,
        closed: Vec<RecordView>,
    },
}

/// What this plane knows of the other one.
pub(crate) struct OtherPlane {
    /// `host` or `dpu`.
    pub name: &'static str,
    interval: Duration,
    /// This plane's own L7 services (see [`PlaneState::l7_services`]), from its config.
    own_l7: Vec<String>,
    seen: Mutex<Seen>,
}

struct Seen {
    state: Option<PlaneState>,
    /// When the last line arrived.
    at: Option<Instant>,
    /// Why the control connection is down (`None`: up).
    down: Option<String>,
}

impl OtherPlane {
    pub fn new(name: &'static str, interval: Duration, own_l7: Vec<String>) -> Self {
        let down = Some("not connected yet".to_owned());
        Self { name, interval, own_l7, seen: Mutex::new(Seen { state: None, at: None, down }) }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `Ok` when the other plane is connected, reported within the last intervals, says it is
    /// ready and holds an SVID that is not near its expiry.
    pub fn readiness(&self, now: SystemTime) -> Result<(), String> {
        let seen = self.seen();
        let plane = self.name;
        if let Some(down) = &seen.down {
            return Err(format!("plane {plane}: control connection down: {down}"));
        }
        let (Some(state), Some(at)) = (&seen.state, seen.at) else {
            return Err(format!("plane {plane}: no certificate state received yet"));
        };
        let age = at.elapsed();
        if age > self.interval * SILENT_AFTER {
            return Err(format!("plane {plane}: no certificate state for {} s", age.as_secs()));
        }
        if let Some(problem) = &state.problem {
            return Err(format!("plane {plane}: {problem}"));
        }
        let both: Vec<&str> =
            state.l7_services.iter().filter(|s| self.own_l7.contains(s)).map(String::as_str).collect();
        if !both.is_empty() {
            return Err(format!(
                "plane {plane}: L7 for {} is configured on both planes: place it on one (protocol = \"http\" in one plane's [[outbound]])",
                both.join(", ")
            ));
        }
        let now = unix(now);
        // Rotation happens at half-life: a quarter left means it has not happened in time.
        let quarter = state.not_after.saturating_sub(state.not_before) / 4;
        let left = state.not_after.saturating_sub(now);
        if left <= quarter {
            return Err(format!("plane {plane}: SVID {} (serial {}) expires in {left} s", state.id, state.serial));
        }
        Ok(())
    }

    /// The other plane's last state, if any.
    pub fn state(&self) -> Option<PlaneState> {
        self.seen().state.clone()
    }

    fn up(&self) {
        self.seen().down = None;
    }

    fn down(&self, reason: String) {
        tracing::warn!(plane = self.name, %reason, "control connection to the other plane down");
        self.seen().down = Some(reason);
    }

    fn heard(&self, state: PlaneState) {
        let mut seen = self.seen();
        seen.state = Some(state);
        seen.at = Some(Instant::now());
    }
}

/// This plane's own state, from its SVID stores and its L7 placement.
fn own_state(shared: &Shared, plane: &str, own_l7: &[String]) -> PlaneState {
    let svid = shared.store.current();
    let rotation = shared.store.rotation_state();
    PlaneState {
        plane: plane.to_owned(),
        id: svid.id.to_string(),
        serial: svid.serial.clone(),
        not_before: unix(svid.not_before),
        not_after: unix(svid.not_after),
        last_rotation: rotation.last_attempt.map(unix),
        last_rotation_error: rotation.last_error,
        problem: crate::admin::own_readiness(shared, SystemTime::now()).err(),
        l7_services: own_l7.to_vec(),
        channel_key: shared.channel_keys.as_ref().map(|k| k.fingerprint()),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The host plane's side: connects to the DPU's control address and keeps the connection up,
/// reconnecting after a second when it drops.
pub(crate) async fn connect(link: PlaneLink, shared: Arc<Shared>, plane: Arc<Plane>) {
    let other = plane.other();
    loop {
        let reason = match dial(&link, &shared).await {
            Ok(tls) => {
                other.up();
                tracing::info!(dpu = %link.addr, "control connection to the DPU up");
                exchange(tls, &plane, &link, &shared).await
            }
            Err(e) => e,
        };
        other.down(reason);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn dial(link: &PlaneLink, shared: &Shared) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let tcp = tokio::time::timeout(shared.handshake_timeout, TcpStream::connect(link.addr))
        .await
        .map_err(|_| format!("{}: connect timed out", link.addr))?
        .map_err(|e| format!("{}: {e}", link.addr))?;
    let config = shared.tls.client(&link.peer_id).map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from("weir.mesh").map_err(|e| e.to_string())?;
    tokio::time::timeout(shared.handshake_timeout, TlsConnector::from(config).connect(name, tcp))
        .await
        .map_err(|_| format!("{}: handshake timed out", link.addr))?
        .map_err(|e| format!("{} ({}): {e}", link.addr, link.peer_id))
}

/// The DPU's side: accepts the host plane's control connections. Any other identity is
/// refused; a newer connection from the host plane simply joins (the latest line wins).
pub(crate) async fn serve(listener: TcpListener, link: PlaneLink, shared: Arc<Shared>, plane: Arc<Plane>) {
    let link = Arc::new(link);
    // Held here so that stopping the listener (the node's shutdown) ends them too: a stopped
    // plane must look stopped to the other one.
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, from)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while connections.try_join_next().is_some() {}
        let (link, shared, plane) = (link.clone(), shared.clone(), plane.clone());
        connections.spawn(async move {
            let id = shared.next_id();
            let acceptor = TlsAcceptor::from(shared.tls.server());
            let tls = match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return shared.refuse(id, Direction::Inbound, Refusal::TlsHandshake, &e),
                Err(_) => return shared.refuse(id, Direction::Inbound, Refusal::HandshakeTimeout, &from),
            };
            let peer = weir_tls::peer_spiffe_id(tls.get_ref().1);
            if peer.as_ref() != Some(&link.peer_id) {
                let detail = format_args!("control connection from {from} as {peer:?}, expected {}", link.peer_id);
                return shared.refuse(id, Direction::Inbound, Refusal::PeerIdMismatch, &detail);
            }
            plane.other().up();
            tracing::info!(%from, "control connection from the host plane up");
            let reason = exchange(tls, &plane, &link, &shared).await;
            plane.other().down(reason);
        });
    }
}

/// Sends this plane's lines every interval and takes the other's, until either side fails or
/// the other plane goes silent. Returns why it ended.
async fn exchange<S>(tls: S, plane: &Plane, link: &PlaneLink, shared: &Arc<Shared>) -> String
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let other = plane.other();
    let (read, mut write) = tokio::io::split(tls);
    let send = async {
        let mut tick = tokio::time::interval(link.interval);
        let mut key_sent = None;
        loop {
            tick.tick().await;
            let mut out = line(&Line::State(own_state(shared, plane.label(), &other.own_l7)));
            if let (Some(keys), Plane::Dpu { .. }) = (&shared.channel_keys, plane) {
                let (key, fingerprint) = keys.newest();
                if key_sent.as_ref() != Some(&fingerprint) {
                    out.extend_from_slice(&line(&Line::Key { key }));
                    key_sent = Some(fingerprint);
                }
            }
            if let Plane::Dpu { outbox, .. } = plane {
                let now = SystemTime::now();
                let open: Vec<_> =
                    shared.records.all().iter().filter(|r| r.start().captured.is_some()).map(|r| r.view(now)).collect();
                let closed = outbox.take();
                if !open.is_empty() || !closed.is_empty() {
                    out.extend_from_slice(&line(&Line::Records { open, closed }));
                }
            }
            if let Err(e) = write.write_all(&out).await {
                return format!("send: {e}");
            }
        }
    };
    let receive = async {
        let mut read = BufReader::new(read);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            let silent = link.interval * SILENT_AFTER;
            let got = tokio::time::timeout(silent, (&mut read).take(MAX_LINE).read_until(b'\n', &mut buf)).await;
            match got {
                Err(_) => return format!("no line from the {} plane in {} s", other.name, silent.as_secs()),
                Ok(Err(e)) => return format!("receive: {e}"),
                Ok(Ok(0)) => return "closed by the other plane".to_owned(),
                Ok(Ok(_)) if buf.last() != Some(&b'\n') => return "line too long or cut".to_owned(),
                Ok(Ok(_)) => {}
            }
            match serde_json::from_slice::<Line>(&buf) {
                Ok(Line::State(state)) => {
                    if let (Some(keys), Some(fingerprint), Plane::Dpu { .. }) =
                        (&shared.channel_keys, &state.channel_key, plane)
                    {
                        if let Err(e) = keys.installed_on_host(fingerprint) {
                            return format!("host channel key: {e}");
                        }
                    }
                    other.heard(state)
                }
                Ok(Line::Key { key }) if matches!(plane, Plane::Host { .. }) => {
                    match shared.channel_keys.as_ref().map_or(Ok(false), |k| k.install(&key)) {
                        Ok(true) => {
                            shared.metrics.channel_key_rotations.inc();
                        }
                        Ok(false) => {}
                        Err(e) => return format!("host channel key from the DPU: {e}"),
                    }
                }
                Ok(Line::Key { .. }) => return "the host plane sent a channel key: only the DPU makes them".to_owned(),
                Ok(Line::Records { open, closed }) => {
                    // Only the host plane joins the DPU's records to its own.
                    if let Plane::Host { wire_facts, .. } = plane {
                        crate::planes::wire_facts::merge(shared, wire_facts, open, closed)
                    }
                }
                Err(e) => return format!("malformed line from the {} plane: {e}", other.name),
            }
        }
    };
    tokio::select! {
        reason = send => reason,
        reason = receive => reason,
    }
}

fn line(l: &Line) -> Vec<u8> {
    // Serializing these plain structs cannot fail.
    let mut out = serde_json::to_vec(l).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(not_before: u64, not_after: u64, problem: Option<&str>) -> PlaneState {
        PlaneState {
            plane: "dpu".into(),
            id: "spiffe://weir.local/ns/weir/sa/dpu".into(),
            serial: "0a".into(),
            not_before,
            not_after,
            last_rotation: None,
            last_rotation_error: None,
            problem: problem.map(str::to_owned),
            l7_services: Vec::new(),
            channel_key: None,
        }
    }

    #[test]
    fn the_other_plane_is_ready_only_when_connected_reporting_ready_and_not_near_expiry() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let other = OtherPlane::new("dpu", Duration::from_secs(5), Vec::new());
        let err = other.readiness(now).expect_err("not connected");
        assert!(err.starts_with("plane dpu: control connection down"), "{err}");
        other.up();
        assert_eq!(other.readiness(now), Err("plane dpu: no certificate state received yet".into()));
        other.heard(state(900, 1400, None));
        assert_eq!(other.readiness(now), Ok(()));
        other.heard(state(900, 1400, Some("last SVID rotation failed: bundle.pem: not found")));
        assert_eq!(other.readiness(now), Err("plane dpu: last SVID rotation failed: bundle.pem: not found".into()));
        other.heard(state(600, 1100, None));
        let err = other.readiness(now).expect_err("a quarter of its lifetime left");
        assert!(err.contains("expires in 100 s"), "{err}");
        other.down("closed by the other plane".into());
        assert_eq!(other.readiness(now), Err("plane dpu: control connection down: closed by the other plane".into()));
    }

    #[test]
    fn l7_placed_on_both_planes_is_a_conflict_each_plane_reports() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1000);
        let host_sees_dpu = OtherPlane::new("dpu", Duration::from_secs(5), vec!["orders".into(), "web".into()]);
        host_sees_dpu.up();
        let mut dpu = state(900, 1400, None);
        dpu.l7_services = vec!["cart".into()];
        host_sees_dpu.heard(dpu.clone());
        assert_eq!(host_sees_dpu.readiness(now), Ok(()), "L7 for different services in different places");
        dpu.l7_services = vec!["cart".into(), "orders".into()];
        host_sees_dpu.heard(dpu);
        let err = host_sees_dpu.readiness(now).expect_err("orders placed twice");
        assert!(err.starts_with("plane dpu: L7 for orders is configured on both planes"), "{err}");
        let old_peer: PlaneState =
            serde_json::from_str(r#"{"plane":"dpu","id":"x","serial":"1","not_before":0,"not_after":1,"last_rotation":null,"last_rotation_error":null,"problem":null}"#)
                .expect("a state line without l7_services (an older plane)");
        assert!(old_peer.l7_services.is_empty());
    }

    #[test]
    fn a_silent_plane_is_not_ready() {
        let other = OtherPlane::new("host", Duration::from_millis(10), Vec::new());
        other.up();
        other.heard(state(0, u64::MAX / 2, None));
        std::thread::sleep(Duration::from_millis(40));
        let err = other.readiness(SystemTime::now()).expect_err("silent for 3 intervals");
        assert!(err.starts_with("plane host: no certificate state for"), "{err}");
    }

    #[test]
    fn lines_round_trip_and_unknown_lines_are_errors() {
        let bytes = line(&Line::State(state(1, 2, None)));
        assert_eq!(bytes.last(), Some(&b'\n'));
        let Ok(Line::State(s)) = serde_json::from_slice::<Line>(&bytes) else { panic!("a state line") };
        assert_eq!(s, state(1, 2, None));
        assert!(serde_json::from_slice::<Line>(br#"{"type":"shell","cmd":"rm"}"#).is_err());
    }
}
