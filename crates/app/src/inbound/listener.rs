//! The inbound listener: a peer node connects, both sides prove their SVIDs, the preamble
//! names a local service, policy decides (default deny), and on success bytes flow to the
//! local backend.
use crate::core::conn::kernel_ready;
use crate::core::conn::{MeshLeg, Refusal, Shared, Tracked};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use weir_identity::SpiffeId;
use weir_policy::{Decision, DenyReason};
use weir_telemetry::records::Captured;
use weir_telemetry::Direction;
use weir_tls::ktls;
use weir_tls::preamble::{Request, Status, REQUEST_HEADER_LEN};
use weir_tls::{Mode, Session};

/// Where a local service's bytes go.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backend {
    pub addr: SocketAddr,
    /// A DPU's service whose backend is on its host: `addr` is the host plane's inbound
    /// listener, and the connection opens with the preamble naming the caller.
    pub on_host: bool,
}

/// Local service name -> backend.
pub(crate) type Backends = HashMap<String, Backend>;

/// Accepts peer nodes until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, backends: Arc<Backends>, shared: Arc<Shared>) {
    crate::core::conn::accept_each(listener, "inbound", |socket, from| {
        let (backends, shared) = (backends.clone(), shared.clone());
        async move { handle(socket, from, &backends, &shared).await }
    })
    .await
}

struct Accepted<S> {
    tls: S,
    peer: SpiffeId,
    service: String,
    backend: TcpStream,
    /// For a service on the host: the caller and this DPU's end of the host-channel leg, which
    /// the host plane joins the record by.
    to_host: Option<Captured>,
}

async fn handle(socket: TcpStream, from: SocketAddr, backends: &Backends, shared: &Arc<Shared>) {
    let id = shared.next_id();
    let _ = socket.set_nodelay(true);
    let config = shared.tls.server();
    if let Some(kernel) = shared.ktls.kernel().filter(|_| kernel_ready(&socket, shared, id)) {
        let Some(a) = accept(ktls::accept(config, socket), from, backends, shared, id).await else { return };
        let switched = match a.tls.switch(kernel).await {
            Ok(s) => s,
            Err(e) => return shared.refuse(id, Direction::Inbound, Refusal::KtlsSetupFailed, &e),
        };
        let http = http_service(shared, &a.service);
        if http.is_some() && !switched.drained.is_empty() {
            // Our own outbound side waits for the preamble answer before sending: bytes this
            // early are not a request we can frame.
            let detail = format_args!("{}: data before the preamble answer", a.peer);
            return shared.refuse(id, Direction::Inbound, Refusal::PreambleMalformed, &detail);
        }
        let leg = MeshLeg::of(&switched.socket, switched.session)
            .copy(http.as_ref().is_some_and(|h| h.config.copy))
            .captured(a.to_host);
        let mode = crate::core::conn::ktls_mode(&switched.socket);
        let t = Tracked::open(shared, id, Direction::Inbound, mode, (a.peer, a.service), leg);
        let outcome = match http {
            Some(svc) => {
                let peer = (switched.socket, Some(switched.keys));
                crate::l7::http1::inbound_socket(shared, &svc, &t, a.backend, peer).await
            }
            None => {
                let s = switched;
                weir_forward::splice_ktls(a.backend, s.socket, &s.keys, s.drained, &t.tally, shared.limits).await
            }
        };
        t.close(outcome);
    } else {
        let Some(a) = accept(TlsAcceptor::from(config).accept(socket), from, backends, shared, id).await else {
            return;
        };
        let http = http_service(shared, &a.service);
        let (tcp, session) = (a.tls.get_ref().0, weir_tls::SessionFacts::of(a.tls.get_ref().1));
        let leg = MeshLeg::of(tcp, session).copy(http.as_ref().is_some_and(|h| h.config.copy)).captured(a.to_host);
        let t = Tracked::open(shared, id, Direction::Inbound, Mode::Userspace, (a.peer, a.service), leg);
        let outcome = match http {
            Some(svc) => crate::l7::http1::inbound_tls(shared, &svc, &t, a.backend, a.tls).await,
            None => weir_forward::copy_tls(a.backend, a.tls, &t.tally).await,
        };
        t.close(outcome);
    }
}

fn http_service(shared: &Shared, service: &str) -> Option<Arc<crate::l7::http1::HttpService>> {
    shared.http.read().unwrap_or_else(|p| p.into_inner()).get(service).cloned()
}

/// Handshake (`tls`), preamble, authorization and backend connect, all within the handshake
/// timeout. `None`: refused, already counted and logged.
async fn accept<S>(
    tls: impl std::future::Future<Output = std::io::Result<S>>,
    from: SocketAddr,
    backends: &Backends,
    shared: &Shared,
    id: u64,
) -> Option<Accepted<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Session,
{
    let exchange = async {
        let mut tls = tls.await.map_err(|e| (Refusal::TlsHandshake, e.to_string()))?;
        let peer = weir_tls::peer_spiffe_id(tls.tls_state())
            .ok_or((Refusal::NoSpiffeId, "client certificate has no SPIFFE ID".to_owned()))?;
        let request = read_request(&mut tls).await.map_err(|e| (Refusal::PreambleMalformed, format!("{peer}: {e}")))?;
        let b = match authorize(shared, backends, &request.service, &peer) {
            Ok(b) => *b,
            Err((status, reason)) => {
                let _ = answer(&mut tls, status).await;
                return Err((reason, format!("{peer} -> {}", request.service)));
            }
        };
        let backend = match connect_backend(&b, &peer, &request.service, shared).await {
            Ok(backend) => backend,
            Err(e) => {
                let _ = answer(&mut tls, Status::Unavailable).await;
                return Err((Refusal::BackendUnavailable, format!("{}: {}: {e}", request.service, b.addr)));
            }
        };
        let _ = backend.set_nodelay(true);
        answer(&mut tls, Status::Ok).await.map_err(|e| (Refusal::TlsHandshake, e.to_string()))?;
        crate::rdma::note_inbound(shared, &peer, &request.service);
        let to_host = b.on_host.then(|| backend.local_addr().ok()).flatten();
        let to_host = to_host.map(|app| Captured { workload: peer.to_string(), app });
        Ok(Accepted { tls, peer, service: request.service, backend, to_host })
    };
    match timeout(shared.handshake_timeout, exchange).await {
        Ok(Ok(a)) => Some(a),
        Ok(Err((reason, detail))) => {
            shared.refuse(id, Direction::Inbound, reason, &format_args!("from {from}: {detail}"));
            None
        }
        Err(_) => {
            shared.refuse(id, Direction::Inbound, Refusal::HandshakeTimeout, &format_args!("from {from}"));
            None
        }
    }
}

/// The one answer to "may `peer` reach `service` on this plane?" (allow-list, default deny),
/// for the inbound listener and the host plane's: the backend to connect, or the status to
/// answer and the refusal to count.
pub(crate) fn authorize<'b>(
    shared: &Shared,
    backends: &'b Backends,
    service: &str,
    peer: &SpiffeId,
) -> Result<&'b Backend, (Status, Refusal)> {
    let decision = shared.policy.read().unwrap_or_else(|p| p.into_inner()).authorize(service, peer);
    match (decision, backends.get(service)) {
        (Decision::Allow, Some(b)) => Ok(b),
        (Decision::Deny(DenyReason::NotAllowed), _) => Err((Status::Denied, Refusal::NotAllowed)),
        // An allowed service without a backend cannot come from one config; answered as unknown.
        _ => Err((Status::UnknownService, Refusal::UnknownService)),
    }
}

/// Connects to `service`'s backend for `caller`; on a DPU, a backend on the host is reached
/// through the host plane, which is told who the caller is.
async fn connect_backend(b: &Backend, caller: &SpiffeId, service: &str, shared: &Shared) -> Result<TcpStream, String> {
    let mut backend = TcpStream::connect(b.addr).await.map_err(|e| e.to_string())?;
    if b.on_host {
        crate::planes::dpu::to_host(&mut backend, shared, caller, service).await?;
    }
    Ok(backend)
}

async fn read_request<S: AsyncRead + Unpin>(tls: &mut S) -> Result<Request, String> {
    let mut header = [0u8; REQUEST_HEADER_LEN];
    tls.read_exact(&mut header).await.map_err(|e| e.to_string())?;
    let more = Request::decode_header(&header).map_err(|e| e.to_string())?;
    let mut body = vec![0u8; more];
    tls.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    Request::decode_body(&body).map_err(|e| e.to_string())
}

async fn answer<S: AsyncWrite + Unpin>(tls: &mut S, status: Status) -> std::io::Result<()> {
    tls.write_all(&status.encode()).await?;
    tls.flush().await?;
    if status != Status::Ok {
        tls.shutdown().await?;
    }
    Ok(())
}
