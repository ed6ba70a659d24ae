//! The host plane's way to the mesh (role `host`): a captured workload connection goes to the
//! DPU's host channel, opened by the authenticated preamble naming the workload and the
//! service (`weir_tls::host_channel`); once the DPU answers `Ok`, the connection is the mesh
//! leg (`outbound::Upstream::Plain`), plaintext spliced by the kernel, whether L4 or with L7
//! routing run here. The DPU presents the workload's SVID on the wire; no TLS runs on the host.
use crate::conn::{Refusal, Shared};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use weir_config::OutboundRoute;
use weir_identity::SpiffeId;
use weir_telemetry::Direction;
use weir_tls::host_channel::HostKey;
use weir_tls::preamble::{Protocol, Request, Status, RESPONSE_LEN};

/// Where the DPU is and how to speak to it.
pub(crate) struct ToDpu {
    /// The DPU's host-channel listener.
    pub addr: SocketAddr,
    /// The key the preambles are sealed with.
    pub key: HostKey,
}

/// Connects to the DPU within `connect_timeout` and exchanges the preamble asking for
/// `route`'s service for `workload`. `None`: refused, counted and logged.
pub(crate) async fn open(
    route: &OutboundRoute,
    workload: &SpiffeId,
    dpu: &ToDpu,
    shared: &Shared,
    id: u64,
    connect_timeout: Duration,
) -> Option<TcpStream> {
    let refuse = |reason, detail: &dyn std::fmt::Display| shared.refuse(id, Direction::Outbound, reason, detail);
    let request = Request { service: route.service.clone(), protocol: Protocol::Tcp };
    let preamble = match dpu.key.seal_now(workload, &request) {
        Ok(p) => p,
        Err(e) => {
            refuse(Refusal::HostPreambleMalformed, &format_args!("{workload}: {e}"));
            return None;
        }
    };
    let exchange = async {
        let mut dpu_leg = match timeout(connect_timeout, TcpStream::connect(dpu.addr)).await {
            Ok(Ok(leg)) => leg,
            Ok(Err(e)) => return Err((Refusal::PeerUnreachable, e.to_string())),
            Err(_) => return Err((Refusal::PeerUnreachable, "connect timed out".to_owned())),
        };
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
            refuse(reason, &format_args!("DPU {} for {workload} -> {}: {detail}", dpu.addr, route.service));
            None
        }
        Err(_) => {
            refuse(Refusal::HandshakeTimeout, &format_args!("DPU {}: no answer in time", dpu.addr));
            None
        }
    }
}
