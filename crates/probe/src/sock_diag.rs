//! Every TCP socket of the current network namespace, from one sock_diag dump per address
//! family (`NETLINK_SOCK_DIAG`, `SOCK_DIAG_BY_FAMILY` with `INET_DIAG_INFO`): addresses, state,
//! inode, a TCP_INFO subset and the kTLS facts of the socket's ULP. Owns the netlink exchange;
//! the attribute bytes are decoded by [`crate::tcp_info`] and [`crate::ulp`].

use crate::tcp_info::TcpInfo;
use crate::ulp::{self, TlsInfo, UlpError, UlpInfo};
use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_sock_diag::constants::{AF_INET, AF_INET6, IPPROTO_TCP};
use netlink_packet_sock_diag::inet::nlas::Nla;
use netlink_packet_sock_diag::inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags};
use netlink_packet_sock_diag::SockDiagMessage;
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};
use std::net::SocketAddr as IpSocketAddr;

/// One TCP socket as the kernel reports it.
#[derive(Debug, Clone)]
pub struct TcpSocket {
    /// Local address and port.
    pub local: IpSocketAddr,
    /// Remote address and port (unspecified for a listener).
    pub remote: IpSocketAddr,
    /// TCP state.
    pub state: TcpState,
    /// Socket inode: the `socket:[N]` a process's fd links to.
    pub inode: u64,
    /// Owning uid.
    pub uid: u32,
    /// TCP_INFO subset; `None` if the kernel sent none (listeners in some states) or too few bytes.
    pub info: Option<TcpInfo>,
    /// The socket's upper-layer protocol, if it has one; `Err` when the kernel's bytes did not parse.
    pub ulp: Option<Result<UlpInfo, UlpError>>,
}

impl TcpSocket {
    /// The socket's kTLS facts, if it is a kTLS socket whose ULP info parsed.
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.ulp.as_ref()?.as_ref().ok()?.tls.as_ref()
    }
}

/// A TCP state number (include/net/tcp_states.h) with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpState(pub u8);

impl TcpState {
    /// `ESTABLISHED`, `LISTEN`, ...
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 13] = [
            "UNKNOWN",
            "ESTABLISHED",
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT1",
            "FIN_WAIT2",
            "TIME_WAIT",
            "CLOSE",
            "CLOSE_WAIT",
            "LAST_ACK",
            "LISTEN",
            "CLOSING",
            "NEW_SYN_RECV",
        ];
        NAMES.get(usize::from(self.0)).copied().unwrap_or("UNKNOWN")
    }
}

/// Why the dump failed.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// Opening, binding or using the netlink socket failed.
    #[error("sock_diag netlink socket: {0}")]
    Socket(std::io::Error),
    /// The kernel answered the dump with an error.
    #[error("sock_diag dump refused by the kernel: {0}")]
    Kernel(std::io::Error),
    /// A reply did not decode.
    #[error("malformed sock_diag reply: {0}")]
    Malformed(String),
}

/// Dumps every TCP socket (IPv4 and IPv6) of the caller's network namespace. The kTLS facts
/// need `CAP_NET_ADMIN` (the kernel leaves ULP info out otherwise).
pub fn tcp_sockets() -> Result<Vec<TcpSocket>, DiagError> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        for response in dump(family)? {
            out.push(from_response(&response));
        }
    }
    Ok(out)
}

/// The one TCP socket with this address pair, as [`tcp_sockets`] would list it, asked of the
/// kernel directly (no dump): cheap enough to call per connection, e.g. to learn whether a
/// socket's kTLS runs on the NIC. `None` when there is no such socket.
pub fn tcp_socket(local: IpSocketAddr, remote: IpSocketAddr) -> Result<Option<TcpSocket>, DiagError> {
    let family = if local.is_ipv4() { AF_INET } else { AF_INET6 };
    let socket_id = SocketId {
        source_port: local.port(),
        destination_port: remote.port(),
        source_address: local.ip(),
        destination_address: remote.ip(),
        interface_id: 0,
        // All 0xff: no cookie to check.
        cookie: [0xff; 8],
    };
    match query(family, socket_id, false) {
        Ok(responses) => Ok(responses.first().map(from_response)),
        Err(DiagError::Kernel(e)) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn dump(family: u8) -> Result<Vec<InetResponse>, DiagError> {
    let socket_id = if family == AF_INET { SocketId::new_v4() } else { SocketId::new_v6() };
    query(family, socket_id, true)
}

/// One request: a dump of the family (until `NLMSG_DONE`), or the one socket `socket_id`
/// names (a single reply, or an error).
fn query(family: u8, socket_id: SocketId, all: bool) -> Result<Vec<InetResponse>, DiagError> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG).map_err(DiagError::Socket)?;
    socket.bind_auto().map_err(DiagError::Socket)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(DiagError::Socket)?;
    let mut header = NetlinkHeader::default();
    header.flags = if all { NLM_F_REQUEST | NLM_F_DUMP } else { NLM_F_REQUEST };
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(
        header,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            // INET_DIAG_INFO also makes the kernel add the ULP attribute (tcp_diag_get_aux).
            extensions: ExtensionFlags::INFO,
            states: StateFlags::all(),
            socket_id,
        })
        .into(),
    );
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(DiagError::Socket)?;

    let mut out = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full().map_err(DiagError::Socket)?;
        if bytes.is_empty() {
            return Err(DiagError::Malformed("empty datagram before NLMSG_DONE".into()));
        }
        let mut offset = 0;
        while offset < bytes.len() {
            let rest = bytes.get(offset..).unwrap_or_default();
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(rest)
                .map_err(|e| DiagError::Malformed(format!("message at byte {offset}: {e}")))?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                NetlinkPayload::Error(e) if e.code.is_some() => return Err(DiagError::Kernel(e.to_io())),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) if !all => return Ok(vec![*r]),
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => out.push(*r),
                _ => {}
            }
            if len == 0 {
                return Err(DiagError::Malformed(format!("zero-length message at byte {offset}")));
            }
            // Messages are aligned to 4 bytes.
            offset += (len + 3) & !3;
        }
    }
}

fn from_response(r: &InetResponse) -> TcpSocket {
    let id = &r.header.socket_id;
    let mut info = None;
    let mut ulp = None;
    for nla in &r.nlas {
        match nla {
            Nla::TcpInfo(bytes) => info = TcpInfo::parse(bytes),
            _ => {
                if let Some(bytes) = ulp_payload(nla) {
                    ulp = Some(ulp::parse(&bytes));
                }
            }
        }
    }
    TcpSocket {
        local: IpSocketAddr::new(id.source_address, id.source_port),
        remote: IpSocketAddr::new(id.destination_address, id.destination_port),
        state: TcpState(r.header.state),
        inode: u64::from(r.header.inode),
        uid: r.header.uid,
        info,
        ulp,
    }
}

fn ulp_payload(nla: &Nla) -> Option<Vec<u8>> {
    match nla {
        Nla::Other(attr) if attr.kind() & !(0x8000 | 0x4000) == ulp::INET_DIAG_ULP_INFO => {
            let mut value = vec![0; attr.value_len()];
            attr.emit_value(&mut value);
            Some(value)
        }
        _ => None,
    }
}

/// Raw `INET_DIAG_ULP_INFO` payloads of the namespace's TCP sockets with their local
/// addresses: how the parser's test vectors are captured from a real kernel.
#[doc(hidden)]
pub fn raw_ulp_payloads() -> Result<Vec<(IpSocketAddr, Vec<u8>)>, DiagError> {
    let mut out = Vec::new();
    for family in [AF_INET, AF_INET6] {
        for r in dump(family)? {
            let id = &r.header.socket_id;
            out.extend(
                r.nlas
                    .iter()
                    .filter_map(ulp_payload)
                    .map(|b| (IpSocketAddr::new(id.source_address, id.source_port), b)),
            );
        }
    }
    Ok(out)
}
