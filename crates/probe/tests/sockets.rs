//! `tcp_sockets` against the host kernel: a loopback connection this test makes is in the
//! dump with its addresses, state, inode and TCP_INFO byte counts, and carries no ULP.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;

#[test]
fn a_loopback_connection_is_dumped_with_tcp_info() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let mut client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let data = vec![7u8; 100_000];
    client.write_all(&data).expect("write");
    let mut got = vec![0u8; data.len()];
    server.read_exact(&mut got).expect("read");

    let inode =
        std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&client))).expect("fd").ino();
    let sockets = weir_probe::tcp_sockets().expect("sock_diag dump");
    let local = client.local_addr().expect("addr");
    let remote = listener.local_addr().expect("addr");
    // The pair, not the local port alone: another socket (another test's, or one in
    // TIME_WAIT) can hold the same local port towards a different peer.
    let s = sockets
        .iter()
        .find(|s| s.local == local && s.remote == remote)
        .unwrap_or_else(|| panic!("{local} -> {remote} not in the dump"));
    assert_eq!(s.state.name(), "ESTABLISHED");
    assert_eq!(s.inode, inode, "inode matches the fd's");
    assert!(s.ulp.is_none() && s.tls().is_none(), "a plain socket has no ULP: {:?}", s.ulp);
    let info = s.info.as_ref().expect("TCP_INFO requested and sent");
    // bytes_acked counts the SYN too.
    assert!(info.bytes_acked.is_some_and(|b| b >= data.len() as u64), "{info:?}");
    assert!(info.snd_cwnd > 0 && info.srtt_us > 0, "{info:?}");
    let peer =
        sockets.iter().find(|s| s.local == server.local_addr().unwrap() && s.remote == local).expect("server end");
    assert!(peer.info.as_ref().and_then(|i| i.bytes_received).is_some_and(|b| b >= data.len() as u64), "{peer:?}");
    assert!(sockets.iter().any(|s| s.state.name() == "LISTEN" && s.local == listener.local_addr().unwrap()));
}

#[test]
fn one_socket_is_asked_for_by_its_address_pair() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let client = TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    let (server, _) = listener.accept().expect("accept");
    let (local, remote) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    let s = weir_probe::tcp_socket(local, remote).expect("sock_diag query").expect("the socket");
    assert_eq!((s.local, s.remote, s.state.name()), (local, remote, "ESTABLISHED"));
    let inode =
        std::fs::metadata(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&client))).expect("fd").ino();
    assert_eq!(s.inode, inode);
    let gone = std::net::SocketAddr::from(([127, 0, 0, 1], 1));
    assert!(weir_probe::tcp_socket(gone, remote).expect("query").is_none(), "no such socket: None, not an error");
    drop(server);
}
