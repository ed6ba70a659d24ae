//! `TCP_INFO`: the kernel's view of one TCP socket (RTT, retransmits, delivery rate, window).
//!
//! Read on Weir's own sockets, either by the task that owns the socket ([`tcp_info`]) or by a
//! sampler off the data path that only knows the fd number ([`tcp_info_if_same`]).
use crate::SyscallError;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};

/// The fields of `struct tcp_info` Weir reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpInfo {
    /// TCP state (`TCP_ESTABLISHED` = 1 ...).
    pub state: u8,
    /// Smoothed RTT, microseconds.
    pub srtt_us: u32,
    /// RTT variance, microseconds.
    pub rttvar_us: u32,
    /// Segments retransmitted over the socket's life.
    pub total_retrans: u32,
    /// Segments believed lost now.
    pub lost: u32,
    /// Congestion window, segments.
    pub snd_cwnd: u32,
    /// Delivery rate, bytes per second (kernel estimate).
    pub delivery_rate: u64,
    /// Bytes sent and acknowledged.
    pub bytes_acked: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

/// Reads `TCP_INFO` of a socket the caller holds.
pub fn tcp_info(fd: BorrowedFd<'_>) -> Result<TcpInfo, SyscallError> {
    // SAFETY: tcp_info is plain old data; getsockopt writes at most `len` bytes into it.
    let mut raw: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: a valid pointer and length for the option value.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut raw as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(SyscallError::last("getsockopt(TCP_INFO)"));
    }
    Ok(TcpInfo {
        state: raw.tcpi_state,
        srtt_us: raw.tcpi_rtt,
        rttvar_us: raw.tcpi_rttvar,
        total_retrans: raw.tcpi_total_retrans,
        lost: raw.tcpi_lost,
        snd_cwnd: raw.tcpi_snd_cwnd,
        delivery_rate: raw.tcpi_delivery_rate,
        bytes_acked: raw.tcpi_bytes_acked,
        bytes_received: raw.tcpi_bytes_received,
    })
}

/// Reads `TCP_INFO` through a bare fd number, but only if that fd is still the socket with
/// this address pair: the owner may have closed it and the number been reused meanwhile.
/// The check comes after the read, so a reuse at any moment before it is caught; no two live
/// sockets share an address pair. `None` when the socket is gone.
pub fn tcp_info_if_same(fd: RawFd, local: SocketAddr, remote: SocketAddr) -> Option<TcpInfo> {
    if fd < 0 {
        return None;
    }
    // SAFETY: only read-only socket queries go through this borrow; on a closed or reused fd
    // they fail (EBADF, ENOTSOCK) or return another socket's facts, which the address check
    // below discards. Nothing is written, closed or kept.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let info = tcp_info(borrowed).ok()?;
    let same =
        sockaddr(borrowed, libc::getsockname) == Some(local) && sockaddr(borrowed, libc::getpeername) == Some(remote);
    same.then_some(info)
}

type NameCall = unsafe extern "C" fn(libc::c_int, *mut libc::sockaddr, *mut libc::socklen_t) -> libc::c_int;

fn sockaddr(fd: BorrowedFd<'_>, call: NameCall) -> Option<SocketAddr> {
    // SAFETY: sockaddr_storage is plain old data, large enough for any address.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: valid pointers; the kernel writes at most `len` bytes.
    if unsafe { call(fd.as_raw_fd(), (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) } < 0 {
        return None;
    }
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: libc::sockaddr_in = unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: libc::sockaddr_in6 = unsafe { std::ptr::read((&storage as *const libc::sockaddr_storage).cast()) };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                ip,
                u16::from_be(a.sin6_port),
                a.sin6_flowinfo,
                a.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn reads_a_live_socket_and_refuses_a_closed_one() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let client = std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
        let (local, remote) = (client.local_addr().expect("local"), client.peer_addr().expect("peer"));
        let info = tcp_info(client.as_fd()).expect("tcp_info");
        assert_eq!(info.state, 1, "established");
        let fd = client.as_raw_fd();
        assert!(tcp_info_if_same(fd, local, remote).is_some());
        assert!(tcp_info_if_same(fd, remote, local).is_none(), "a different address pair is another socket");
        drop(client);
        assert!(tcp_info_if_same(fd, local, remote).is_none(), "closed");
    }
}
