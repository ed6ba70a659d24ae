//! Byte layouts of the map keys and values in `bpf/weir.bpf.c`, encoded explicitly (native
//! endian fields, network-order addresses and ports, as the C side reads them). Keeping them
//! as byte arrays lets aya's `Pod` impls for arrays do the rest without `unsafe` here.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// An address as the C side stores it: IPv4 as `::ffff:a.b.c.d`.
pub fn addr16(ip: IpAddr) -> [u8; 16] {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of `addr16`.
pub fn ip_of(b: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(b);
    match v6.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(v6),
    }
}

/// `WL_COUNT_HTTP` in `struct workload.flags`.
pub const COUNT_HTTP: u32 = 1;

/// `struct workload`.
pub fn workload(id: u32, max_conns: u32, flags: u32) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&id.to_ne_bytes());
    b[4..8].copy_from_slice(&max_conns.to_ne_bytes());
    b[8..].copy_from_slice(&flags.to_ne_bytes());
    b
}

/// HTTP methods in `enum method`, by index.
pub const METHODS: [&str; 8] = ["GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "OTHER"];

/// The data part (after `prefixlen`) of `struct deny4_key`.
pub fn deny4(workload: u32, port: u16, addr: Ipv4Addr) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..4].copy_from_slice(&workload.to_ne_bytes());
    b[4..6].copy_from_slice(&port.to_be_bytes());
    b[8..].copy_from_slice(&addr.octets());
    b
}

/// The data part of `struct deny6_key`.
pub fn deny6(workload: u32, port: u16, addr: Ipv6Addr) -> [u8; 24] {
    let mut b = [0u8; 24];
    b[..4].copy_from_slice(&workload.to_ne_bytes());
    b[4..6].copy_from_slice(&port.to_be_bytes());
    b[8..].copy_from_slice(&addr.octets());
    b
}

/// `struct svc_key`.
pub fn service(dst: SocketAddr) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..16].copy_from_slice(&addr16(dst.ip()));
    b[16..18].copy_from_slice(&dst.port().to_be_bytes());
    b
}

/// `struct capture_cfg`; `None` turns capture off.
pub fn capture(listener: Option<(Ipv4Addr, Ipv6Addr, u16)>) -> [u8; 24] {
    let mut b = [0u8; 24];
    if let Some((v4, v6, port)) = listener {
        b[..4].copy_from_slice(&v4.octets());
        b[4..20].copy_from_slice(&v6.octets());
        b[20..22].copy_from_slice(&port.to_be_bytes());
    }
    b
}

/// `struct src_key`.
pub fn source(src: SocketAddr) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[..16].copy_from_slice(&addr16(src.ip()));
    b[16..].copy_from_slice(&u32::from(src.port()).to_ne_bytes());
    b
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_ne_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}

fn addr_at(b: &[u8], at: usize) -> [u8; 16] {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    a
}

/// `struct sock_info` as the capture listener needs it: (workload, original destination).
pub fn sock_info(b: &[u8; 32]) -> (u32, Option<SocketAddr>) {
    let port = u16::from_be_bytes([b[24], b[25]]);
    let dst = (u32_at(b, 4) != 0).then(|| SocketAddr::new(ip_of(addr_at(b, 8)), port));
    (u32_at(b, 0), dst)
}

/// One connection's kernel facts (`struct conn_key` + `struct conn_stats`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnFacts {
    /// Local address.
    pub local: SocketAddr,
    /// Remote address.
    pub remote: SocketAddr,
    /// Socket cookie (the join key with userspace records).
    pub cookie: u64,
    /// Workload id (0: none).
    pub workload: u32,
    /// Who the connection is to: the original destination if it was captured, else the remote.
    pub peer: SocketAddr,
    /// Whether it was captured to the node.
    pub captured: bool,
    /// Smoothed RTT now, and its min and max over the connection, microseconds.
    pub srtt_us: (u32, u32, u32),
    /// Retransmitted segments.
    pub retransmits: u32,
    /// Bytes acknowledged by the peer.
    pub bytes_acked: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// TCP state (`TCP_CLOSE` = 7 once closed).
    pub state: u32,
}

/// Decodes a `weir_conn_stats` entry.
pub fn conn_facts(k: &[u8; 40], v: &[u8; 88]) -> ConnFacts {
    let local = SocketAddr::new(ip_of(addr_at(k, 0)), u32_at(k, 32) as u16);
    let remote = SocketAddr::new(ip_of(addr_at(k, 16)), u32_at(k, 36) as u16);
    ConnFacts {
        local,
        remote,
        peer: SocketAddr::new(ip_of(addr_at(v, 0)), u32_at(v, 16) as u16),
        captured: u32_at(v, 20) != 0,
        cookie: u64_at(v, 24),
        bytes_received: u64_at(v, 48),
        bytes_acked: u64_at(v, 56),
        workload: u32_at(v, 64),
        srtt_us: (u32_at(v, 68), u32_at(v, 72), u32_at(v, 76)),
        retransmits: u32_at(v, 80),
        state: u32_at(v, 84),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_c_structs() {
        assert_eq!(deny4(7, 443, Ipv4Addr::new(10, 1, 2, 3)), [7, 0, 0, 0, 0x01, 0xbb, 0, 0, 10, 1, 2, 3]);
        let svc = service("127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(&svc[10..16], &[0xff, 0xff, 127, 0, 0, 1]);
        assert_eq!(&svc[16..18], &[0x1f, 0x90]);
        assert_eq!(ip_of(addr16("10.0.0.1".parse().expect("ip"))), "10.0.0.1".parse::<IpAddr>().expect("ip"));
        assert_eq!(ip_of(addr16("::1".parse().expect("ip"))), "::1".parse::<IpAddr>().expect("ip"));
        let mut info = [0u8; 32];
        info[0] = 3;
        info[4] = 1;
        info[8..24].copy_from_slice(&addr16("192.0.2.9".parse().expect("ip")));
        info[24..26].copy_from_slice(&80u16.to_be_bytes());
        assert_eq!(sock_info(&info), (3, Some("192.0.2.9:80".parse().expect("addr"))));
    }
}
