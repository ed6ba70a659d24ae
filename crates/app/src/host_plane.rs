//! The host plane's data path (role `host`): a captured workload connection goes to the DPU's
//! host channel, opened by the authenticated preamble naming the workload and the service
//! (`weir_tls::host_channel`); once the DPU answers `Ok`, bytes splice both ways in plaintext.
//! The DPU presents the workload's SVID on the wire; no TLS runs on the host.
use crate::conn::{MeshLeg, Refusal, Shared, Tracked, Workload};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use weir_config::OutboundRoute;
use weir_identity::SpiffeId;
use weir_telemetry::records::Captured;
use weir_telemetry::Direction;
use weir_tls::host_channel::HostKey;
use weir_tls::preamble::{Protocol, Request, Status, RESPONSE_LEN};
use weir_tls::{Mode, SessionFacts};

/// Where the DPU is and how to speak to it.
pub(crate) struct ToDpu {
    /// The DPU's host-channel listener.
    pub addr: SocketAddr,
    /// The key the preambles are sealed with.
    pub key: HostKey,
    /// The DPU plane's SPIFFE ID (records name it as the connection's peer).
    pub id: SpiffeId,
}

/// Carries one captured connection of `workload` to `route`'s service through the DPU.
pub(crate) async fn forward(
    app: TcpStream,
    route: &OutboundRoute,
    workload: &Workload,
    dpu: &ToDpu,
    shared: &Arc<Shared>,
    captured: Captured,
) {
    let id = shared.next_id();
    let Some(leg) = open(route, workload, dpu, shared, id).await else {
        return crate::outbound::reset(app);
    };
    let session = SessionFacts { version: "none", cipher: "none" };
    let who = (dpu.id.clone(), route.service.clone());
    let mesh_leg = MeshLeg::of(&leg, session).captured(Some(captured));
    let t = Tracked::open(shared, id, Direction::Outbound, Mode::HostChannel, who, mesh_leg);
    let outcome = weir_forward::splice_plain(app, leg, &t.tally, shared.limits.pipe_size).await;
    t.close(outcome);
}

/// Connects to the DPU and exchanges the preamble. `None`: refused, counted and logged.
async fn open(route: &OutboundRoute, workload: &Workload, dpu: &ToDpu, shared: &Shared, id: u64) -> Option<TcpStream> {
    let refuse = |reason, detail: &dyn std::fmt::Display| shared.refuse(id, Direction::Outbound, reason, detail);
    let request = Request { service: route.service.clone(), protocol: Protocol::Tcp };
    let preamble = match dpu.key.seal_now(&workload.id, &request) {
        Ok(p) => p,
        Err(e) => {
            refuse(Refusal::HostPreambleMalformed, &format_args!("{}: {e}", workload.id));
            return None;
        }
    };
    let exchange = async {
        let mut dpu_leg = TcpStream::connect(dpu.addr).await.map_err(|e| (Refusal::PeerUnreachable, e.to_string()))?;
        let _ = dpu_leg.set_nodelay(true);
        dpu_leg.write_all(&preamble).await.map_err(|e| (Refusal::PeerRefused, e.to_string()))?;
        let mut answer = [0u8; RESPONSE_LEN];
        dpu_leg.read_exact(&mut answer).await.map_err(|e| (Refusal::PeerRefused, format!("no answer: {e}")))?;
        match Status::decode(&answer) {
            Ok(Status::Ok) => Ok(dpu_leg),
            Ok(status) => Err((Refusal::PeerRefused, format!("the DPU answered {status:?}"))),
            Err(e) => Err((Refusal::PreambleMalformed, e.to_string())),
        }
    };
    match timeout(shared.handshake_timeout, exchange).await {
        Ok(Ok(leg)) => Some(leg),
        Ok(Err((reason, detail))) => {
            refuse(reason, &format_args!("DPU {} for {} -> {}: {detail}", dpu.addr, workload.id, route.service));
            None
        }
        Err(_) => {
            refuse(Refusal::HandshakeTimeout, &format_args!("DPU {}: no answer in time", dpu.addr));
            None
        }
    }
}
