//! The outbound listener: a local app connects to a mapped port; this node connects to the
//! peer node, proves its identity, checks the peer's, names the destination service in the
//! preamble, then forwards (kTLS splice, or userspace TLS where the kernel has no kTLS). On a
//! host plane the mesh leg is the DPU's host channel instead ([`Via::Dpu`]): the DPU does the
//! mTLS, and the leg is plaintext spliced by the kernel.
use crate::core::conn::{rustls_error, MeshLeg, Refusal, Shared, Tracked};
use crate::core::preamble::{exchange, Failed};
use rustls::pki_types::ServerName;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::{client::TlsStream, TlsConnector};
use weir_config::OutboundRoute;
use weir_identity::SpiffeId;
use weir_telemetry::records::Captured;
use weir_telemetry::Direction;
use weir_tls::ktls::{self, Switched};
use weir_tls::preamble::{Protocol, Request};
use weir_tls::{Mode, TlsConfigs};

/// Accepts local apps on one route's port until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, route: Arc<OutboundRoute>, shared: Arc<Shared>) {
    let what = format!("outbound {}", route.service);
    crate::core::conn::accept_each(listener, &what, |app, _| {
        let (route, shared) = (route.clone(), shared.clone());
        let via = Via::Tls(shared.tls.clone());
        async move { handle(app, &route, &via, &shared, None).await }
    })
    .await
}

/// Whose identity an outbound connection carries, and which plane does its mTLS.
#[derive(Clone)]
pub(crate) enum Via {
    /// This plane, presenting the SVID in these configurations (the node's, or a captured
    /// workload's).
    Tls(Arc<TlsConfigs>),
    /// The DPU, for this host workload (a host plane: the workload's SVID is on the DPU).
    Dpu(SpiffeId),
}

impl Via {
    /// The SPIFFE ID the connection is made for.
    pub fn id(&self) -> SpiffeId {
        match self {
            Self::Tls(tls) => tls.id(),
            Self::Dpu(workload) => workload.clone(),
        }
    }
}

/// Carries one app connection to `route`'s peer for `via`'s identity (`captured`: the app is a
/// captured workload, named there with its socket).
pub(crate) async fn handle(
    app: TcpStream,
    route: &OutboundRoute,
    via: &Via,
    shared: &Arc<Shared>,
    captured: Option<Captured>,
) {
    let _ = app.set_nodelay(true);
    if let Some(http) = &route.http {
        return crate::outbound::http::handle(app, route, http, via, shared, captured).await;
    }
    let id = shared.next_id();
    let peer = match connect(route, via, shared, id, shared.handshake_timeout).await {
        Ok(peer) => peer,
        Err(Refused) => return crate::core::conn::reset(app),
    };
    crate::rdma::note_outbound(shared, route, &via.id(), captured.as_ref().map(|c| c.workload.as_str()));
    let who = (route.peer_id.clone(), route.service.clone());
    let t = Tracked::open(shared, id, Direction::Outbound, peer.mode(), who, peer.leg(false).captured(captured));
    let outcome = peer.pump(app, &t.tally, shared.limits).await;
    t.close(outcome);
}

/// A mesh connection to a peer node, past handshake and preamble.
pub(crate) enum Upstream {
    /// kTLS installed both ways (with plaintext rustls decrypted before the switch, and the
    /// key schedule); whether the kernel or the NIC encrypts.
    Ktls(Box<Switched>, Mode),
    /// Userspace TLS.
    Tls(Box<TlsStream<TcpStream>>),
    /// A host plane's host-channel connection to its DPU, past the DPU's `Ok`: plaintext.
    Plain(TcpStream),
}

impl Upstream {
    pub fn mode(&self) -> Mode {
        match self {
            Self::Ktls(.., mode) => *mode,
            Self::Tls(_) => Mode::Userspace,
            Self::Plain(_) => Mode::HostChannel,
        }
    }

    /// Moves the app's bytes both ways until either side ends: the one L4 pump of an outbound
    /// connection, whichever kind its mesh leg is.
    pub async fn pump(
        self,
        app: TcpStream,
        tally: &weir_forward::Tally,
        limits: weir_forward::Limits,
    ) -> weir_forward::Outcome {
        match self {
            Self::Ktls(s, _) => weir_forward::splice_ktls(app, s.socket, &s.keys, s.drained, tally, limits).await,
            Self::Tls(tls) => weir_forward::copy_tls(app, *tls, tally).await,
            Self::Plain(dpu) => weir_forward::splice_plain(app, dpu, tally, limits.pipe_size).await,
        }
    }

    /// The mesh leg for the connection's record (`copy`: served in copy mode).
    pub fn leg(&self, copy: bool) -> MeshLeg {
        match self {
            Self::Ktls(s, _) => MeshLeg::of(&s.socket, s.session),
            Self::Tls(tls) => MeshLeg::of(tls.get_ref().0, weir_tls::SessionFacts::of(tls.get_ref().1)),
            Self::Plain(dpu) => MeshLeg::of(dpu, weir_tls::SessionFacts { version: "none", cipher: "none" }),
        }
        .copy(copy)
    }
}

/// A connection refused on the way to the peer node (already counted and logged).
pub(crate) struct Refused;

/// Connects to `route`'s peer node within `connect_timeout` (TCP), then handshake and
/// preamble within the handshake timeout (for [`Via::Dpu`]: to the DPU's host channel, then
/// its preamble). `Err`: refused, already counted and logged.
pub(crate) async fn connect(
    route: &OutboundRoute,
    via: &Via,
    shared: &Shared,
    id: u64,
    connect_timeout: std::time::Duration,
) -> Result<Upstream, Refused> {
    let refuse = |reason, detail: &dyn std::fmt::Display| {
        shared.refuse(id, Direction::Outbound, reason, detail);
        Refused
    };
    let tls = match via {
        Via::Tls(tls) => tls,
        Via::Dpu(workload) => {
            let Some(dpu) = &shared.to_dpu else {
                return Err(refuse(Refusal::TlsHandshake, &format_args!("{workload}: no DPU link on this plane")));
            };
            return crate::planes::host::open(route, workload, dpu, shared, id, connect_timeout)
                .await
                .map(Upstream::Plain)
                .ok_or(Refused);
        }
    };
    let peer = match timeout(connect_timeout, TcpStream::connect(route.peer)).await {
        Ok(Ok(peer)) => peer,
        Ok(Err(e)) => return Err(refuse(Refusal::PeerUnreachable, &format_args!("{}: {e}", route.peer))),
        Err(_) => return Err(refuse(Refusal::PeerUnreachable, &format_args!("{}: connect timed out", route.peer))),
    };
    let _ = peer.set_nodelay(true);
    let config = match tls.client(&route.peer_id) {
        Ok(c) => c,
        Err(e) => return Err(refuse(Refusal::TlsHandshake, &e)),
    };
    let Ok(name) = ServerName::try_from(MESH_SERVER_NAME) else {
        return Err(refuse(Refusal::TlsHandshake, &format_args!("{MESH_SERVER_NAME:?} is not a server name")));
    };
    match shared.ktls.kernel() {
        Some(kernel) if crate::core::conn::kernel_ready(&peer, shared, id) => {
            let staged = handshake(ktls::connect(config, name, peer), route, shared, id).await.ok_or(Refused)?;
            match staged.switch(kernel).await {
                Ok(s) => {
                    let mode = crate::core::conn::ktls_mode(&s.socket);
                    Ok(Upstream::Ktls(Box::new(s), mode))
                }
                Err(e) => Err(refuse(Refusal::KtlsSetupFailed, &e)),
            }
        }
        _ => {
            let tls =
                handshake(TlsConnector::from(config).connect(name, peer), route, shared, id).await.ok_or(Refused)?;
            Ok(Upstream::Tls(Box::new(tls)))
        }
    }
}

/// The server name every mesh handshake carries: the peer is checked by SPIFFE ID, not by name.
const MESH_SERVER_NAME: &str = "weir.mesh";

/// TLS handshake (`tls`: the verifier checks the peer's SPIFFE ID) and preamble. `None`:
/// refused, already counted and logged.
async fn handshake<S>(
    tls: impl std::future::Future<Output = std::io::Result<S>>,
    route: &OutboundRoute,
    shared: &Shared,
    id: u64,
) -> Option<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        let mut tls = tls.await.map_err(|e| {
            let reason = match rustls_error(&e) {
                Some(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure)) => {
                    Refusal::PeerIdMismatch
                }
                _ => Refusal::TlsHandshake,
            };
            (reason, e.to_string())
        })?;
        let request = Request { service: route.service.clone(), protocol: Protocol::Tcp }
            .encode()
            .map_err(|e| (Refusal::PreambleMalformed, e.to_string()))?;
        match exchange(&mut tls, &request).await {
            Ok(()) => Ok(tls),
            Err(Failed::Send(e)) => Err((Refusal::PeerRefused, e.to_string())),
            Err(Failed::NoAnswer(e)) => Err((Refusal::PeerRefused, format!("no preamble answer: {e}"))),
            Err(Failed::Answered(status)) => Err((Refusal::PeerRefused, format!("peer answered {status:?}"))),
            Err(Failed::Malformed(e)) => Err((Refusal::PreambleMalformed, e.to_string())),
        }
    };
    match timeout(shared.handshake_timeout, exchange).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err((reason, detail))) => {
            shared.refuse(
                id,
                Direction::Outbound,
                reason,
                &format_args!("{} ({}): {detail}", route.peer, route.peer_id),
            );
            None
        }
        Err(_) => {
            shared.refuse(id, Direction::Outbound, Refusal::HandshakeTimeout, &route.peer);
            None
        }
    }
}
