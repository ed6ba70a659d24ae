//! The host plane's way to the mesh (role `host`): a captured workload connection goes to the
//! DPU's host channel, opened by the authenticated preamble naming the workload and the
//! service (`weir_tls::host_channel`); once the DPU answers `Ok`, the connection is the mesh
//! leg (`outbound::Upstream::Plain`), plaintext spliced by the kernel, whether L4 or with L7
//! routing run here. The DPU presents the workload's SVID on the wire; no TLS runs on the host.
//!
//! Inbound, the mirror ([`serve_inbound`]): the DPU terminates the wire's mTLS and admits the
//! caller, then opens a connection to this plane's inbound listener with a preamble naming the
//! caller (under the inbound key); this plane checks it, its own allow-list for the service
//! (defence in depth), runs the service's L7 policy if it is placed here, and splices to the
//! local backend.
use crate::core::conn::{MeshLeg, Refusal, Shared, Tracked};
use crate::core::preamble::{exchange, Failed};
use crate::inbound::listener::Backends;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use weir_config::OutboundRoute;
use weir_identity::SpiffeId;
use weir_telemetry::Direction;
use weir_tls::preamble::{Protocol, Request, Status};
use weir_tls::{Mode, SessionFacts};

/// Where the DPU is (the preambles are sealed with `Shared::channel_keys`).
pub(crate) struct ToDpu {
    /// The DPU's host-channel listener.
    pub addr: SocketAddr,
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
    let sealed = shared.channel_keys.as_ref().map(|k| k.seal(workload, &request));
    let preamble = match sealed.unwrap_or(Err(weir_tls::host_channel::Error::KeyLength(0))) {
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
        match exchange(&mut dpu_leg, &preamble).await {
            Ok(()) => Ok(dpu_leg),
            Err(Failed::Send(e)) => Err((Refusal::PeerRefused, e.to_string())),
            Err(Failed::NoAnswer(e)) => Err((Refusal::PeerRefused, format!("no answer: {e}"))),
            Err(Failed::Answered(status)) => Err((Refusal::PeerRefused, format!("the DPU answered {status:?}"))),
            Err(Failed::Malformed(e)) => Err((Refusal::PreambleMalformed, e.to_string())),
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

/// What the host plane's inbound listener needs besides the channel keys: the local backends.
pub(crate) struct FromDpu {
    pub backends: Backends,
}

/// Accepts the DPU's inbound connections until the task is aborted.
pub(crate) async fn serve_inbound(listener: TcpListener, from_dpu: Arc<FromDpu>, shared: Arc<Shared>) {
    crate::core::conn::accept_each(listener, "host plane inbound", |dpu, from| {
        let (from_dpu, shared) = (from_dpu.clone(), shared.clone());
        async move { inbound(dpu, from, &from_dpu, &shared).await }
    })
    .await
}

async fn inbound(mut dpu: TcpStream, from: SocketAddr, from_dpu: &FromDpu, shared: &Arc<Shared>) {
    let id = shared.next_id();
    let _ = dpu.set_nodelay(true);
    let checked = (id, Direction::Inbound);
    let Some(asked) = crate::planes::dpu::accept_preamble(&mut dpu, from, shared, checked).await else {
        return crate::core::conn::reset(dpu);
    };
    let (caller, service) = (asked.workload, asked.request.service);
    let refuse = |reason, detail: &dyn std::fmt::Display| {
        shared.refuse(id, Direction::Inbound, reason, &format_args!("{caller} -> {service} via {from}: {detail}"));
    };
    let backend = match crate::inbound::listener::authorize(shared, &from_dpu.backends, &service, &caller) {
        Ok(b) => TcpStream::connect(b.addr).await.map_err(|e| (Status::Unavailable, e)),
        Err((status, reason)) => {
            let _ = dpu.write_all(&status.encode()).await;
            let detail = match reason {
                Refusal::NotAllowed => "not in this plane's allow-list",
                _ => "no such service on this host",
            };
            return refuse(reason, &detail);
        }
    };
    let backend = match backend {
        Ok(b) => b,
        Err((status, e)) => {
            let _ = dpu.write_all(&status.encode()).await;
            return refuse(Refusal::BackendUnavailable, &e);
        }
    };
    let _ = backend.set_nodelay(true);
    if dpu.write_all(&Status::Ok.encode()).await.is_err() {
        return;
    }
    let http = shared.http.read().unwrap_or_else(|p| p.into_inner()).get(&service).cloned();
    let leg = MeshLeg::of(&dpu, SessionFacts { version: "none", cipher: "none" })
        .copy(http.as_ref().is_some_and(|h| h.config.copy));
    let t = Tracked::open(shared, id, Direction::Inbound, Mode::HostChannel, (caller, service), leg);
    let outcome = match http {
        Some(svc) => crate::l7::http1::inbound_socket(shared, &svc, &t, backend, (dpu, None)).await,
        None => weir_forward::splice_plain(backend, dpu, &t.tally, shared.limits.pipe_size).await,
    };
    t.close(outcome);
}
