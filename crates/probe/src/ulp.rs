//! Parser for the `INET_DIAG_ULP_INFO` attribute a TCP socket with an upper-layer protocol
//! carries in a sock_diag reply (kernel: `tcp_diag_put_ulp`, and for kTLS `tls_get_info` in
//! net/tls/tls_main.c). netlink-packet-sock-diag hands this attribute over as raw bytes; this
//! module turns those bytes into facts. Pure: no sockets, never panics, an error for anything
//! truncated or malformed.
//!
//! Layout (include/uapi/linux/inet_diag.h, include/uapi/linux/tls.h): the attribute's payload
//! is a list of netlink attributes, `INET_ULP_INFO_NAME` (NUL-terminated string, e.g. "tls")
//! and, for kTLS, `INET_ULP_INFO_TLS`, itself a list of `TLS_INFO_*` attributes.

use serde::Serialize;

/// `INET_DIAG_ULP_INFO`: the sock_diag attribute that holds this payload.
pub const INET_DIAG_ULP_INFO: u16 = 19;
const INET_ULP_INFO_NAME: u16 = 1;
const INET_ULP_INFO_TLS: u16 = 2;
const TLS_INFO_VERSION: u16 = 1;
const TLS_INFO_CIPHER: u16 = 2;
const TLS_INFO_TXCONF: u16 = 3;
const TLS_INFO_RXCONF: u16 = 4;
const TLS_INFO_ZC_RO_TX: u16 = 5;
const TLS_INFO_RX_NO_PAD: u16 = 6;
/// The kernel sets these flag bits in an attribute type; they are not part of the type.
const NLA_TYPE_MASK: u16 = !(0x8000 | 0x4000);

/// What the kernel says about a socket's upper-layer protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UlpInfo {
    /// The ULP's name (`tls`, `mptcp`, ...).
    pub name: String,
    /// kTLS state, when the ULP is `tls` and the kernel reported it.
    pub tls: Option<TlsInfo>,
}

/// kTLS state of one socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlsInfo {
    /// Protocol version as the kernel encodes it (0x0304 = TLS 1.3); absent before keys are set.
    pub version: Option<u16>,
    /// `TLS_CIPHER_*` number; absent before keys are set.
    pub cipher: Option<u16>,
    /// Who seals outgoing records.
    pub tx: TlsConf,
    /// Who opens incoming records.
    pub rx: TlsConf,
    /// `TLS_TX_ZEROCOPY_RO` is on (device offload only).
    pub zerocopy_tx: bool,
    /// `TLS_RX_EXPECT_NO_PAD` is on.
    pub rx_no_pad: bool,
}

/// Where one direction's TLS records are processed (`TLS_CONF_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsConf {
    /// ULP attached, no key installed for this direction: records go through userspace.
    Base,
    /// Kernel software crypto.
    Sw,
    /// NIC crypto, packet by packet (`tls-hw-tx-offload` / `tls-hw-rx-offload`).
    Hw,
    /// NIC terminates TCP and TLS (`tls-hw-record`).
    HwRecord,
    /// A value this parser does not know (a newer kernel).
    Unknown(u16),
}

/// Why a ULP payload could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlpError {
    /// An attribute header or value runs past the end of its container.
    #[error("truncated attribute at offset {offset}: {need} bytes needed, {have} left")]
    Truncated {
        /// Offset of the attribute in its container.
        offset: usize,
        /// Bytes the attribute claims.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// An attribute length shorter than its own header.
    #[error("attribute at offset {offset} has impossible length {len}")]
    BadLength {
        /// Offset of the attribute.
        offset: usize,
        /// Its length field.
        len: u16,
    },
    /// A fixed-size attribute of the wrong size.
    #[error("attribute {kind} has {len} value bytes, {want} expected")]
    BadValue {
        /// Attribute type.
        kind: &'static str,
        /// Value bytes found.
        len: usize,
        /// Value bytes expected.
        want: usize,
    },
    /// The name is not a NUL-terminated UTF-8 string.
    #[error("ULP name is not a NUL-terminated string")]
    BadName,
    /// No `INET_ULP_INFO_NAME`.
    #[error("no ULP name attribute")]
    MissingName,
    /// `tls` ULP info without the two direction attributes.
    #[error("TLS info lacks {0}")]
    MissingConf(&'static str),
}

impl TlsConf {
    fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::Base,
            2 => Self::Sw,
            3 => Self::Hw,
            4 => Self::HwRecord,
            other => Self::Unknown(other),
        }
    }

    /// Short label: `base`, `sw`, `hw`, `hw-record`.
    pub fn label(self) -> String {
        match self {
            Self::Base => "base".into(),
            Self::Sw => "sw".into(),
            Self::Hw => "hw".into(),
            Self::HwRecord => "hw-record".into(),
            Self::Unknown(v) => format!("unknown({v})"),
        }
    }

    /// The NIC does this direction's crypto.
    pub fn is_hardware(self) -> bool {
        matches!(self, Self::Hw | Self::HwRecord)
    }
}

impl TlsInfo {
    /// "1.2", "1.3", or the raw number.
    pub fn version_label(&self) -> String {
        match self.version {
            Some(0x0303) => "1.2".into(),
            Some(0x0304) => "1.3".into(),
            Some(v) => format!("0x{v:04x}"),
            None => "none".into(),
        }
    }

    /// Cipher name per include/uapi/linux/tls.h `TLS_CIPHER_*`.
    pub fn cipher_label(&self) -> String {
        match self.cipher {
            Some(51) => "AES-GCM-128".into(),
            Some(52) => "AES-GCM-256".into(),
            Some(53) => "AES-CCM-128".into(),
            Some(54) => "CHACHA20-POLY1305".into(),
            Some(55) => "SM4-GCM".into(),
            Some(56) => "SM4-CCM".into(),
            Some(57) => "ARIA-GCM-128".into(),
            Some(58) => "ARIA-GCM-256".into(),
            Some(v) => format!("cipher({v})"),
            None => "none".into(),
        }
    }
}

/// Parses the payload of an `INET_DIAG_ULP_INFO` attribute (without its own 4-byte header).
pub fn parse(payload: &[u8]) -> Result<UlpInfo, UlpError> {
    let mut name = None;
    let mut tls = None;
    for attr in Attrs::new(payload) {
        let (kind, value) = attr?;
        match kind {
            INET_ULP_INFO_NAME => name = Some(c_string(value)?),
            INET_ULP_INFO_TLS => tls = Some(parse_tls(value)?),
            // MPTCP and future ULPs: not ours to judge.
            _ => {}
        }
    }
    Ok(UlpInfo { name: name.ok_or(UlpError::MissingName)?, tls })
}

fn parse_tls(payload: &[u8]) -> Result<TlsInfo, UlpError> {
    let (mut version, mut cipher, mut tx, mut rx) = (None, None, None, None);
    let (mut zerocopy_tx, mut rx_no_pad) = (false, false);
    for attr in Attrs::new(payload) {
        let (kind, value) = attr?;
        match kind {
            TLS_INFO_VERSION => version = Some(u16_value("TLS_INFO_VERSION", value)?),
            TLS_INFO_CIPHER => cipher = Some(u16_value("TLS_INFO_CIPHER", value)?),
            TLS_INFO_TXCONF => tx = Some(TlsConf::from_u16(u16_value("TLS_INFO_TXCONF", value)?)),
            TLS_INFO_RXCONF => rx = Some(TlsConf::from_u16(u16_value("TLS_INFO_RXCONF", value)?)),
            TLS_INFO_ZC_RO_TX => zerocopy_tx = true,
            TLS_INFO_RX_NO_PAD => rx_no_pad = true,
            _ => {}
        }
    }
    Ok(TlsInfo {
        version,
        cipher,
        tx: tx.ok_or(UlpError::MissingConf("TLS_INFO_TXCONF"))?,
        rx: rx.ok_or(UlpError::MissingConf("TLS_INFO_RXCONF"))?,
        zerocopy_tx,
        rx_no_pad,
    })
}

fn u16_value(kind: &'static str, value: &[u8]) -> Result<u16, UlpError> {
    // Netlink integers are host-endian.
    match value {
        [a, b] => Ok(u16::from_ne_bytes([*a, *b])),
        _ => Err(UlpError::BadValue { kind, len: value.len(), want: 2 }),
    }
}

fn c_string(value: &[u8]) -> Result<String, UlpError> {
    let end = value.iter().position(|b| *b == 0).ok_or(UlpError::BadName)?;
    let s = value.get(..end).ok_or(UlpError::BadName)?;
    std::str::from_utf8(s).map(str::to_owned).map_err(|_| UlpError::BadName)
}

/// Iterates netlink attributes: (type without flag bits, value). Stops after the first error.
struct Attrs<'a> {
    buf: &'a [u8],
    offset: usize,
    failed: bool,
}

impl<'a> Attrs<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, offset: 0, failed: false }
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<(u16, &'a [u8]), UlpError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.offset >= self.buf.len() {
            return None;
        }
        let rest = self.buf.get(self.offset..).unwrap_or_default();
        let item = (|| {
            let header = rest.get(..4).ok_or(UlpError::Truncated { offset: self.offset, need: 4, have: rest.len() })?;
            let len = u16::from_ne_bytes([header[0], header[1]]);
            let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
            if len < 4 {
                return Err(UlpError::BadLength { offset: self.offset, len });
            }
            let value = rest.get(4..usize::from(len)).ok_or(UlpError::Truncated {
                offset: self.offset,
                need: usize::from(len),
                have: rest.len(),
            })?;
            // Attributes are padded to 4 bytes; the last one's padding may be absent.
            self.offset += (usize::from(len) + 3) & !3;
            Ok((kind, value))
        })();
        self.failed = item.is_err();
        Some(item)
    }
}

#[cfg(test)]
mod tests;
