//! The RDMA queue pairs the kernel tracks (what `rdma res show qp` prints), from its resource
//! tracker over `NETLINK_RDMA`: a device dump (`RDMA_NLDEV_CMD_GET`), then one
//! `RDMA_NLDEV_CMD_RES_QP_GET` dump per device, which the kernel only answers for one device
//! index at a time (nldev.c `res_get_common_dumpit`).
//!
//! Owns that netlink exchange and the decoding of its replies (include/uapi/rdma/rdma_netlink.h).
//! Does not own sysfs facts about devices and ports ([`crate::rdma`]) or any verdict. A QP
//! names its owner by pid only: the kernel leaves the command name to /proc/PID/comm, and says
//! it only for its own QPs. Nothing here panics: a kernel without `NETLINK_RDMA`, a refusal or
//! a malformed reply is an [`RdmaNlError`] whose text is the reason.

use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkDeserializable, NetlinkHeader, NetlinkMessage, NetlinkPayload, NetlinkSerializable,
    NlasIterator, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_sys::{protocols::NETLINK_RDMA, Socket, SocketAddr};

/// `RDMA_NL_NLDEV`: the netlink client of the RDMA device interface.
const RDMA_NL_NLDEV: u16 = 5;
const RDMA_NLDEV_CMD_GET: u16 = 1;
const RDMA_NLDEV_CMD_RES_QP_GET: u16 = 10;

const ATTR_DEV_INDEX: u16 = 1;
const ATTR_DEV_NAME: u16 = 2;
const ATTR_PORT_INDEX: u16 = 3;
const ATTR_RES_QP: u16 = 19;
const ATTR_RES_QP_ENTRY: u16 = 20;
const ATTR_RES_LQPN: u16 = 21;
const ATTR_RES_RQPN: u16 = 22;
const ATTR_RES_TYPE: u16 = 26;
const ATTR_RES_STATE: u16 = 27;
const ATTR_RES_PID: u16 = 28;
const ATTR_RES_KERN_NAME: u16 = 29;

/// One queue pair as the kernel's resource tracker reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePair {
    /// RDMA device name (`mlx5_0`, `rxe0`).
    pub device: String,
    /// Port number; `None` while the QP is not bound to a port yet (just created).
    pub port: Option<u32>,
    /// Local QP number.
    pub lqpn: u32,
    /// Remote QP number, for connected types (RC, UC) only; 0 until the QP is connected.
    pub rqpn: Option<u32>,
    /// Transport type.
    pub qp_type: QpType,
    /// State.
    pub state: QpState,
    /// Owning process, in the caller's pid namespace, for QPs made by user space; `None` for
    /// the kernel's own QPs and for an owner that is already a zombie. The kernel only lists
    /// QPs of processes in the caller's pid namespace.
    pub pid: Option<u32>,
    /// The kernel module that owns a kernel QP (`ib_core` for the GSI QP); user QPs carry none.
    pub kernel_owner: Option<String>,
}

impl QueuePair {
    /// Who owns the QP by name: the kernel module for a kernel QP, else the owner's
    /// /proc/PID/comm, which the kernel leaves to user space to read (racy: the pid may be gone
    /// or reused); `None` when neither is known.
    pub fn owner_name(&self) -> Option<String> {
        if let Some(module) = &self.kernel_owner {
            return Some(module.clone());
        }
        let comm = std::fs::read_to_string(format!("/proc/{}/comm", self.pid?)).ok()?;
        Some(comm.trim_end().to_owned())
    }
}

/// A QP type number (`enum ib_qp_type`, include/rdma/ib_verbs.h) with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpType(pub u8);

impl QpType {
    /// Reliable connected.
    pub const RC: Self = Self(2);

    /// `RC`, `UD`, `GSI`, ... as iproute2's `rdma` spells them.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 11] = [
            "SMI",
            "GSI",
            "RC",
            "UC",
            "UD",
            "RAW_IPV6",
            "RAW_ETHERTYPE",
            "UNKNOWN",
            "RAW_PACKET",
            "XRC_INI",
            "XRC_TGT",
        ];
        match self.0 {
            0xff => "DRIVER",
            n => NAMES.get(usize::from(n)).copied().unwrap_or("UNKNOWN"),
        }
    }
}

/// A QP state number (`enum ib_qp_state`) with its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpState(pub u8);

impl QpState {
    /// Ready to send: connected and usable.
    pub const RTS: Self = Self(3);

    /// `RESET`, `INIT`, `RTR`, `RTS`, `SQD`, `SQE` or `ERR`.
    pub fn name(self) -> &'static str {
        const NAMES: [&str; 7] = ["RESET", "INIT", "RTR", "RTS", "SQD", "SQE", "ERR"];
        NAMES.get(usize::from(self.0)).copied().unwrap_or("UNKNOWN")
    }

    /// Connected to a remote QP: RTR, RTS, SQD or SQE (its peer's number is set, so the
    /// exchange that set up the session has happened).
    pub fn is_connected(self) -> bool {
        (2..=5).contains(&self.0)
    }
}

/// Why the QPs could not be listed. The text is the reason a caller reports.
#[derive(Debug, thiserror::Error)]
pub enum RdmaNlError {
    /// The kernel has no `NETLINK_RDMA` family: no RDMA core (ib_core) built or loaded.
    #[error("no NETLINK_RDMA in this kernel (RDMA core, ib_core, not loaded): {0}")]
    Unsupported(std::io::Error),
    /// Opening or using the netlink socket failed.
    #[error("NETLINK_RDMA socket: {0}")]
    Socket(std::io::Error),
    /// The kernel refused the request (EPERM, EINVAL for a device that went away).
    #[error("RDMA netlink request refused by the kernel: {0}")]
    Kernel(std::io::Error),
    /// A reply did not decode.
    #[error("malformed RDMA netlink reply: {0}")]
    Malformed(String),
}

/// Every QP of every RDMA device the caller's network namespace sees (an empty list when there
/// is no device). Blocking: a few netlink round trips.
pub fn queue_pairs() -> Result<Vec<QueuePair>, RdmaNlError> {
    let mut out = Vec::new();
    for payload in raw_qp_payloads()? {
        out.extend(parse_qps(&payload)?);
    }
    Ok(out)
}

/// The raw payloads of every device's QP dump, as the kernel sent them: how the parser's test
/// vectors are captured from a real kernel.
#[doc(hidden)]
pub fn raw_qp_payloads() -> Result<Vec<Vec<u8>>, RdmaNlError> {
    let socket = open()?;
    let mut seq = 0;
    let mut devices = Vec::new();
    for payload in dump(&socket, RDMA_NLDEV_CMD_GET, &[], next(&mut seq))? {
        devices.push(parse_device(&payload)?);
    }
    let mut out = Vec::new();
    for (index, _) in devices {
        let filter = [DefaultNla::new(ATTR_DEV_INDEX, index.to_ne_bytes().to_vec())];
        out.extend(dump(&socket, RDMA_NLDEV_CMD_RES_QP_GET, &filter, next(&mut seq))?);
    }
    Ok(out)
}

fn next(seq: &mut u32) -> u32 {
    *seq += 1;
    *seq
}

fn open() -> Result<Socket, RdmaNlError> {
    let mut socket = Socket::new(NETLINK_RDMA).map_err(|e| match e.raw_os_error() {
        Some(EPROTONOSUPPORT) => RdmaNlError::Unsupported(e),
        _ => RdmaNlError::Socket(e),
    })?;
    socket.bind_auto().map_err(RdmaNlError::Socket)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(RdmaNlError::Socket)?;
    Ok(socket)
}

/// `EPROTONOSUPPORT` on Linux: what `socket()` says for a netlink family no module registered.
const EPROTONOSUPPORT: i32 = 93;

/// One dump request; the payloads of its replies, until `NLMSG_DONE`.
fn dump(socket: &Socket, op: u16, attrs: &[DefaultNla], seq: u32) -> Result<Vec<Vec<u8>>, RdmaNlError> {
    let mut payload = vec![0; attrs.buffer_len()];
    attrs.emit(&mut payload);
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_DUMP;
    header.sequence_number = seq;
    let mut request = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(RdmaMessage { op, payload }));
    request.finalize();
    let mut buf = vec![0; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0).map_err(RdmaNlError::Socket)?;
    let mut out = Vec::new();
    loop {
        let (bytes, _) = socket.recv_from_full().map_err(RdmaNlError::Socket)?;
        if parse_datagram(&bytes, op, seq, &mut out)? == Dump::Done {
            return Ok(out);
        }
    }
}

/// Whether a dump's last datagram has been read.
#[derive(Debug, PartialEq, Eq)]
enum Dump {
    More,
    Done,
}

/// One datagram of a dump's replies: appends the payloads of `op` messages answering `seq`.
fn parse_datagram(bytes: &[u8], op: u16, seq: u32, out: &mut Vec<Vec<u8>>) -> Result<Dump, RdmaNlError> {
    if bytes.is_empty() {
        return Err(RdmaNlError::Malformed("empty datagram before NLMSG_DONE".into()));
    }
    let mut offset = 0;
    while let Some(rest) = bytes.get(offset..).filter(|r| !r.is_empty()) {
        let msg = NetlinkMessage::<RdmaMessage>::deserialize(rest)
            .map_err(|e| RdmaNlError::Malformed(format!("message at byte {offset}: {e}")))?;
        if msg.header.sequence_number != seq {
            return Err(RdmaNlError::Malformed(format!(
                "reply to request {} while waiting for {seq}",
                msg.header.sequence_number
            )));
        }
        match msg.payload {
            NetlinkPayload::Done(d) if d.code != 0 => {
                return Err(RdmaNlError::Kernel(std::io::Error::from_raw_os_error(-d.code)))
            }
            NetlinkPayload::Done(_) => return Ok(Dump::Done),
            NetlinkPayload::Error(e) if e.code.is_some() => return Err(RdmaNlError::Kernel(e.to_io())),
            NetlinkPayload::InnerMessage(m) if m.op == op => out.push(m.payload),
            NetlinkPayload::InnerMessage(m) => {
                return Err(RdmaNlError::Malformed(format!("reply for command {} to command {op}", m.op)))
            }
            _ => {}
        }
        let len = msg.header.length as usize;
        if len == 0 {
            return Err(RdmaNlError::Malformed(format!("zero-length message at byte {offset}")));
        }
        // Messages are aligned to 4 bytes.
        offset += (len + 3) & !3;
    }
    Ok(Dump::More)
}

/// An nldev message: the command (the low bits of the netlink type) and its attribute bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RdmaMessage {
    op: u16,
    payload: Vec<u8>,
}

impl NetlinkSerializable for RdmaMessage {
    fn message_type(&self) -> u16 {
        // RDMA_NL_GET_TYPE(client, op)
        (RDMA_NL_NLDEV << 10) | self.op
    }

    fn buffer_len(&self) -> usize {
        self.payload.len()
    }

    fn serialize(&self, buffer: &mut [u8]) {
        buffer.copy_from_slice(&self.payload);
    }
}

impl NetlinkDeserializable for RdmaMessage {
    type Error = MessageError;

    fn deserialize(header: &NetlinkHeader, payload: &[u8]) -> Result<Self, Self::Error> {
        let client = header.message_type >> 10;
        if client != RDMA_NL_NLDEV {
            return Err(MessageError(format!("netlink type {:#x} is not an nldev message", header.message_type)));
        }
        Ok(Self { op: header.message_type & 0x3ff, payload: payload.to_vec() })
    }
}

/// Why a netlink message is not an nldev message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct MessageError(String);

/// A device from a `RDMA_NLDEV_CMD_GET` reply: its index and name.
fn parse_device(payload: &[u8]) -> Result<(u32, String), RdmaNlError> {
    let (mut index, mut name) = (None, None);
    for nla in attrs(payload, "device")? {
        match nla.kind {
            ATTR_DEV_INDEX => index = Some(nla.u32("DEV_INDEX")?),
            ATTR_DEV_NAME => name = Some(nla.string()),
            _ => {}
        }
    }
    match (index, name) {
        (Some(i), Some(n)) => Ok((i, n)),
        _ => Err(RdmaNlError::Malformed("a device without DEV_INDEX or DEV_NAME".into())),
    }
}

/// The QPs of one `RDMA_NLDEV_CMD_RES_QP_GET` reply: a device's name, then a `RES_QP` table of
/// `RES_QP_ENTRY` nests.
fn parse_qps(payload: &[u8]) -> Result<Vec<QueuePair>, RdmaNlError> {
    let mut device = None;
    let mut entries = Vec::new();
    for nla in attrs(payload, "QP reply")? {
        match nla.kind {
            ATTR_DEV_NAME => device = Some(nla.string()),
            ATTR_RES_QP => {
                for entry in attrs(nla.value, "RES_QP table")? {
                    if entry.kind == ATTR_RES_QP_ENTRY {
                        entries.push(entry.value);
                    }
                }
            }
            _ => {}
        }
    }
    let device = device.ok_or_else(|| RdmaNlError::Malformed("a QP reply without DEV_NAME".into()))?;
    entries.into_iter().map(|e| parse_qp(&device, e)).collect()
}

fn parse_qp(device: &str, entry: &[u8]) -> Result<QueuePair, RdmaNlError> {
    let (mut port, mut lqpn, mut rqpn, mut qp_type, mut state, mut pid, mut kernel_owner) =
        (None, None, None, None, None, None, None);
    for nla in attrs(entry, "RES_QP_ENTRY")? {
        match nla.kind {
            ATTR_PORT_INDEX => port = Some(nla.u32("PORT_INDEX")?),
            ATTR_RES_LQPN => lqpn = Some(nla.u32("RES_LQPN")?),
            ATTR_RES_RQPN => rqpn = Some(nla.u32("RES_RQPN")?),
            ATTR_RES_TYPE => qp_type = Some(QpType(nla.u8("RES_TYPE")?)),
            ATTR_RES_STATE => state = Some(QpState(nla.u8("RES_STATE")?)),
            ATTR_RES_PID => pid = Some(nla.u32("RES_PID")?),
            ATTR_RES_KERN_NAME => kernel_owner = Some(nla.string()),
            _ => {}
        }
    }
    let missing = |what| RdmaNlError::Malformed(format!("a {device} QP entry without {what}"));
    Ok(QueuePair {
        device: device.to_owned(),
        port,
        lqpn: lqpn.ok_or_else(|| missing("RES_LQPN"))?,
        rqpn,
        qp_type: qp_type.ok_or_else(|| missing("RES_TYPE"))?,
        state: state.ok_or_else(|| missing("RES_STATE"))?,
        pid,
        kernel_owner,
    })
}

/// One attribute: its type (nested and byte-order flags masked off) and value bytes.
struct Attr<'a> {
    kind: u16,
    value: &'a [u8],
}

/// The attributes of `bytes`, every one checked against the buffer's length.
fn attrs<'a>(bytes: &'a [u8], what: &str) -> Result<Vec<Attr<'a>>, RdmaNlError> {
    NlasIterator::new(bytes)
        .map(|nla| {
            let nla = nla.map_err(|e| RdmaNlError::Malformed(format!("{what} attributes: {e}")))?;
            let kind = nla.kind();
            let len = usize::from(nla.length());
            // new_checked (in the iterator) made sure 4 <= len <= the buffer's length.
            let value = nla.into_inner().get(4..len).unwrap_or_default();
            Ok(Attr { kind, value })
        })
        .collect()
}

impl Attr<'_> {
    fn u32(&self, what: &str) -> Result<u32, RdmaNlError> {
        let bytes: [u8; 4] = self
            .value
            .try_into()
            .map_err(|_| RdmaNlError::Malformed(format!("{what}: {} bytes, 4 expected", self.value.len())))?;
        Ok(u32::from_ne_bytes(bytes))
    }

    fn u8(&self, what: &str) -> Result<u8, RdmaNlError> {
        match self.value {
            [b] => Ok(*b),
            v => Err(RdmaNlError::Malformed(format!("{what}: {} bytes, 1 expected", v.len()))),
        }
    }

    /// A NUL-terminated string (the NUL and any padding dropped).
    fn string(&self) -> String {
        let end = self.value.iter().position(|&b| b == 0).unwrap_or(self.value.len());
        String::from_utf8_lossy(self.value.get(..end).unwrap_or_default()).into_owned()
    }
}

#[cfg(test)]
mod tests;
