//! The DPU role's host channel: plaintext connections from the host plane, each opened by the
//! authenticated preamble of `weir_tls::host_channel` naming the workload behind it and the
//! mesh service it wants. A connection whose preamble is malformed, forged, stale or replayed,
//! or names a workload this DPU does not act for, is refused (counted by reason, closed with a
//! RST); otherwise the DPU answers `Ok` and carries it like an outbound connection, presenting
//! that workload's own SVID on the wire. Also the DPU's end of inbound connections to services
//! on the host ([`to_host`]) and the preamble check both planes' listeners share.
use crate::core::conn::{Refusal, Shared};
use crate::core::preamble::{exchange, Failed};
use crate::outbound::listener as outbound;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_identity::SpiffeId;
use weir_telemetry::Direction;
use weir_tls::host_channel::{self as wire, Error as PreambleError, HostRequest};
use weir_tls::preamble::{Protocol, Request, Status};
use weir_tls::TlsConfigs;

/// How long the host plane has to send its preamble.
const PREAMBLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the listener needs besides the channel keys: the TLS configurations of the workloads
/// this DPU acts for.
pub(crate) struct HostChannel {
    pub workloads: HashMap<SpiffeId, Arc<TlsConfigs>>,
}

/// Accepts host-channel connections until the task is aborted.
pub(crate) async fn serve(listener: TcpListener, channel: Arc<HostChannel>, shared: Arc<Shared>) {
    crate::core::conn::accept_each(listener, "host channel", |host, from| {
        let (channel, shared) = (channel.clone(), shared.clone());
        async move { handle(host, from, &channel, &shared).await }
    })
    .await
}

async fn handle(mut host: TcpStream, from: SocketAddr, channel: &HostChannel, shared: &Arc<Shared>) {
    let id = shared.next_id();
    let _ = host.set_nodelay(true);
    let Some(asked) = accept_preamble(&mut host, from, shared, (id, Direction::Outbound)).await else {
        return crate::core::conn::reset(host);
    };
    let Some(tls) = channel.workloads.get(&asked.workload) else {
        return crate::core::conn::refuse_app(
            host,
            shared,
            id,
            Refusal::UnregisteredWorkload,
            &format_args!("{} from {from}", asked.workload),
        );
    };
    let Some(route) = shared.directory.get(&asked.request.service).cloned() else {
        let _ = host.write_all(&Status::UnknownService.encode()).await;
        let detail = format_args!("{} asked for {:?}", asked.workload, asked.request.service);
        return crate::core::conn::refuse_app(host, shared, id, Refusal::UnknownService, &detail);
    };
    // The host sends its app's bytes only after this: nothing of them was read here.
    if host.write_all(&Status::Ok.encode()).await.is_err() {
        return;
    }
    tracing::debug!(conn = id, workload = %asked.workload, service = route.service, "host-channel connection");
    let captured = weir_telemetry::records::Captured { workload: asked.workload.to_string(), app: from };
    outbound::handle(host, &route, &outbound::Via::Tls(tls.clone()), shared, Some(captured)).await;
}

/// Reads and verifies a host-channel preamble (either direction: `direction` is the
/// connection's, for its refusal record). `None`: refused, counted and logged; the caller
/// resets the connection.
pub(crate) async fn accept_preamble(
    leg: &mut TcpStream,
    from: SocketAddr,
    shared: &Shared,
    (id, direction): (u64, Direction),
) -> Option<HostRequest> {
    let refuse = |reason, detail: &dyn std::fmt::Display| {
        shared.refuse(id, direction, reason, &format_args!("from {from}: {detail}"));
        None
    };
    let bytes = match tokio::time::timeout(PREAMBLE_TIMEOUT, read_preamble(leg)).await {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(Read::Bad(e))) => return refuse(refusal(&e), &e),
        Ok(Err(Read::Io(e))) => return refuse(Refusal::HostPreambleMalformed, &e),
        Err(_) => return refuse(Refusal::HandshakeTimeout, &"no host-channel preamble in 5 s"),
    };
    let Some(keys) = &shared.channel_keys else {
        return refuse(Refusal::HostPreambleForged, &"no host channel key on this plane");
    };
    match keys.check(&bytes, SystemTime::now()) {
        Ok(asked) => Some(asked),
        Err(e) => refuse(refusal(&e), &e),
    }
}

/// The DPU's side of an inbound connection to a service on its host: the preamble naming the
/// remote `caller`, then the host plane's answer.
pub(crate) async fn to_host(
    leg: &mut TcpStream,
    shared: &Shared,
    caller: &SpiffeId,
    service: &str,
) -> Result<(), String> {
    let request = Request { service: service.to_owned(), protocol: Protocol::Tcp };
    let keys = shared.channel_keys.as_ref().ok_or("no host channel key on this plane")?;
    let preamble = keys.seal(caller, &request).map_err(|e| e.to_string())?;
    exchange(leg, &preamble).await.map_err(|failed| match failed {
        Failed::Send(e) => format!("host plane: {e}"),
        Failed::NoAnswer(e) => format!("no answer from the host plane: {e}"),
        Failed::Answered(status) => format!("the host plane answered {status:?}"),
        Failed::Malformed(e) => format!("host plane: {e}"),
    })
}

enum Read {
    Bad(PreambleError),
    Io(std::io::Error),
}

/// Reads exactly the preamble, field by field as far as the codec says: not one byte after it
/// leaves the socket.
async fn read_preamble(leg: &mut TcpStream) -> Result<Vec<u8>, Read> {
    let mut buf = Vec::new();
    loop {
        let known = wire::read_to(&buf).map_err(Read::Bad)?;
        if known.complete && buf.len() == known.len {
            return Ok(buf);
        }
        let from = buf.len();
        buf.resize(known.len, 0);
        leg.read_exact(&mut buf[from..]).await.map_err(Read::Io)?;
    }
}

fn refusal(e: &PreambleError) -> Refusal {
    match e {
        PreambleError::Mac => Refusal::HostPreambleForged,
        PreambleError::Stale(_) => Refusal::HostPreambleStale,
        PreambleError::Replayed => Refusal::HostPreambleReplayed,
        PreambleError::Busy => Refusal::HostChannelBusy,
        _ => Refusal::HostPreambleMalformed,
    }
}
