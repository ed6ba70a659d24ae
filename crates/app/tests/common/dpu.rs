//! A DPU node in process and a hand-made host plane: the planes' key, sealed preambles, and
//! connections through the DPU's host channel (the host-channel suite and the kTLS guest
//! suite).
use super::{id, node_config, read_hash, write_pattern, Mesh, Opts};
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_app::Node;
use weir_tls::host_channel::HostKey;
use weir_tls::preamble::{Protocol, Request, Status, RESPONSE_LEN};

pub const KEY: [u8; 32] = [0x5c; 32];

pub struct Dpu {
    pub node: Node,
    pub channel: SocketAddr,
    pub control: SocketAddr,
}

pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub fn key_file(dir: &Path) -> std::path::PathBuf {
    let key_file = dir.join("host-channel.key");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, format!("{hex}\n")).unwrap();
    key_file
}

/// A DPU node acting for workload `cart` (and no other), with the route to `echo` on the mesh,
/// its SVIDs from the CA in `ca_dir`, its host channel and control listener at `addrs`.
pub async fn dpu(mesh: &Mesh, ca_dir: &Path, opts: &Opts, addrs: (SocketAddr, SocketAddr)) -> Dpu {
    dpu_with(mesh, ca_dir, opts, addrs, ("", "")).await
}

/// [`dpu`], with `route_extra` appended to the `echo` route (e.g. `protocol = "http"`, or
/// more tables) and `channel_extra` to `[host_channel]`.
pub async fn dpu_with(
    mesh: &Mesh,
    ca_dir: &Path,
    opts: &Opts,
    (channel, control): (SocketAddr, SocketAddr),
    (route_extra, channel_extra): (&str, &str),
) -> Dpu {
    let common = node_config(ca_dir, "dpu", opts);
    let cfg = format!(
        "role = \"dpu\"\n{common}[[outbound]]\nlisten = \"127.0.0.1:0\"\nservice = \"echo\"\npeer = \"{}\"\npeer_id = \"{}\"\n{route_extra}\n\
         [host_channel]\nlisten = \"{channel}\"\nkey_file = \"{}\"\nworkloads = [\"{}\"]\n{channel_extra}\n\
         [host_channel.control]\naddr = \"{control}\"\npeer_id = \"{}\"\ninterval_secs = 1\n",
        mesh.inbound(),
        id("server"),
        key_file(mesh.dir.path()).display(),
        id("cart"),
        id("host"),
    );
    let node = Node::start(weir_config::parse(&cfg, "dpu.toml").expect("dpu config")).await.expect("dpu node");
    Dpu { node, channel, control }
}

pub fn sealed(key: &[u8], workload: &str) -> Vec<u8> {
    let request = Request { service: "echo".into(), protocol: Protocol::Tcp };
    let nonce: [u8; 16] = fastrand::u128(..).to_le_bytes();
    HostKey::new(key).unwrap().seal(&id(workload), &request, SystemTime::now(), nonce).unwrap()
}

/// Sends `preamble` and, when the DPU answers Ok, `len` bytes; returns the status and whether
/// the echo came back byte-exact. A refused connection is closed: no status.
pub async fn through(dpu: &Dpu, preamble: &[u8], len: u64) -> (Option<Status>, bool) {
    let mut s = TcpStream::connect(dpu.channel).await.unwrap();
    s.write_all(preamble).await.unwrap();
    let mut status = [0u8; RESPONSE_LEN];
    match tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut status)).await.expect("answer or close") {
        Ok(_) => {}
        Err(_) => return (None, false),
    }
    let status = Status::decode(&status).expect("a status");
    if status != Status::Ok {
        return (Some(status), false);
    }
    let (mut r, mut w) = s.into_split();
    let writer = tokio::spawn(async move {
        let h = write_pattern(&mut w, len, 7).await.unwrap();
        w.shutdown().await.unwrap();
        h
    });
    let (got_len, got) = read_hash(&mut r).await.unwrap();
    (Some(status), got_len == len && got == writer.await.unwrap())
}

/// An open connection through the DPU as workload `cart` (the host plane's side, by hand).
pub async fn held_open(channel: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(channel).await.unwrap();
    s.write_all(&sealed(&KEY, "cart")).await.unwrap();
    let mut status = [0u8; RESPONSE_LEN];
    s.read_exact(&mut status).await.unwrap();
    assert_eq!(Status::decode(&status), Ok(Status::Ok));
    s
}

pub async fn echoes(s: &mut TcpStream, text: &[u8]) -> bool {
    let mut back = vec![0u8; text.len()];
    s.write_all(text).await.is_ok() && s.read_exact(&mut back).await.is_ok() && back == text
}
