//! The subset of `struct tcp_info` (include/uapi/linux/tcp.h) that Weir reads from a sock_diag
//! `INET_DIAG_INFO` attribute. Pure: offsets into bytes; older kernels send a shorter struct,
//! so each field is read only when the bytes reach it.

use serde::Serialize;

/// TCP facts of one socket, as the kernel measured them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TcpInfo {
    /// Smoothed round-trip time, microseconds (`tcpi_rtt`).
    pub srtt_us: u32,
    /// Round-trip time variance, microseconds (`tcpi_rttvar`).
    pub rttvar_us: u32,
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u32,
    /// Congestion window, segments (`tcpi_snd_cwnd`).
    pub snd_cwnd: u32,
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`; counts the SYN as one).
    pub bytes_acked: Option<u64>,
    /// Bytes received in order (`tcpi_bytes_received`).
    pub bytes_received: Option<u64>,
    /// Latest delivery-rate sample, bytes per second (`tcpi_delivery_rate`).
    pub delivery_rate: Option<u64>,
}

// Offsets in `struct tcp_info`, checked against the uapi header with offsetof().
const RTT: usize = 68;
const RTTVAR: usize = 72;
const SND_CWND: usize = 80;
const TOTAL_RETRANS: usize = 100;
const BYTES_ACKED: usize = 120;
const BYTES_RECEIVED: usize = 128;
const DELIVERY_RATE: usize = 160;

impl TcpInfo {
    /// Reads the subset from raw `struct tcp_info` bytes; `None` if even the oldest fields are
    /// missing (a struct shorter than Linux 2.6's).
    pub fn parse(b: &[u8]) -> Option<Self> {
        Some(Self {
            srtt_us: u32_at(b, RTT)?,
            rttvar_us: u32_at(b, RTTVAR)?,
            snd_cwnd: u32_at(b, SND_CWND)?,
            total_retrans: u32_at(b, TOTAL_RETRANS)?,
            bytes_acked: u64_at(b, BYTES_ACKED),
            bytes_received: u64_at(b, BYTES_RECEIVED),
            delivery_rate: u64_at(b, DELIVERY_RATE),
        })
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_structs_give_what_they_have() {
        assert_eq!(TcpInfo::parse(&[0u8; 100]), None, "total_retrans ends at 104");
        let mut b = vec![0u8; 104];
        b[RTT..RTT + 4].copy_from_slice(&1500u32.to_ne_bytes());
        let t = TcpInfo::parse(&b).expect("104 bytes hold the 32-bit fields");
        assert_eq!((t.srtt_us, t.bytes_acked, t.delivery_rate), (1500, None, None));
        let mut b = vec![0u8; 232];
        b[BYTES_ACKED..BYTES_ACKED + 8].copy_from_slice(&7u64.to_ne_bytes());
        b[DELIVERY_RATE..DELIVERY_RATE + 8].copy_from_slice(&9u64.to_ne_bytes());
        let t = TcpInfo::parse(&b).expect("full struct");
        assert_eq!((t.bytes_acked, t.delivery_rate), (Some(7), Some(9)));
    }
}
