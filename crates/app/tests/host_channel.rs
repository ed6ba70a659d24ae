//! The DPU role's host channel, in process: a host-plane client that holds the planes' key
//! reaches a peer node's service as its workload (the peer admits only that workload, not the
//! DPU), byte-exact; a process without the key, a replayed preamble, an unregistered workload
//! and plain bytes are refused, counted by reason, and never reach the service.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::{id, metric, node_config, read_hash, write_pattern, Mesh, Opts};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_app::Node;
use weir_tls::host_channel::HostKey;
use weir_tls::preamble::{Protocol, Request, Status, RESPONSE_LEN};

const KEY: [u8; 32] = [0x5c; 32];

struct Dpu {
    node: Node,
    channel: SocketAddr,
}

/// A DPU node acting for workload `cart` (and no other), with the route to `echo` on the mesh.
async fn dpu(mesh: &Mesh) -> Dpu {
    let channel = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let key_file = mesh.dir.path().join("host-channel.key");
    let hex: String = KEY.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&key_file, format!("{hex}\n")).unwrap();
    let common = node_config(&mesh.dir.path().join("ca"), "dpu", &Opts::new("off"));
    let cfg = format!(
        "role = \"dpu\"\n{common}[[outbound]]\nlisten = \"127.0.0.1:0\"\nservice = \"echo\"\npeer = \"{}\"\npeer_id = \"{}\"\n\
         [host_channel]\nlisten = \"{channel}\"\nkey_file = \"{}\"\nworkloads = [\"{}\"]\n",
        mesh.inbound(),
        id("server"),
        key_file.display(),
        id("cart")
    );
    let node = Node::start(weir_config::parse(&cfg, "dpu.toml").expect("dpu config")).await.expect("dpu node");
    Dpu { node, channel }
}

fn sealed(key: &[u8], workload: &str) -> Vec<u8> {
    let request = Request { service: "echo".into(), protocol: Protocol::Tcp };
    let nonce: [u8; 16] = fastrand::u128(..).to_le_bytes();
    HostKey::new(key).unwrap().seal(&id(workload), &request, SystemTime::now(), nonce).unwrap()
}

/// Sends `preamble` and, when the DPU answers Ok, `len` bytes; returns the status and whether
/// the echo came back byte-exact. A refused connection is closed: no status.
async fn through(dpu: &Dpu, preamble: &[u8], len: u64) -> (Option<Status>, bool) {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_workload_reaches_the_mesh_as_itself_and_nothing_else_does() {
    let mut opts = Opts::new("off");
    // The service admits the workload only: the DPU's own identity would be refused.
    opts.allow = vec![id("cart")];
    let mesh = Mesh::start(opts).await;
    let dpu = dpu(&mesh).await;

    let preamble = sealed(&KEY, "cart");
    assert_eq!(through(&dpu, &preamble, 3 << 20).await, (Some(Status::Ok), true), "byte-exact as workload cart");
    let served = mesh.backend.accepted.load(Ordering::Relaxed);
    assert_eq!(served, 1);
    let server_metrics = mesh.server.metrics_text();
    assert!(server_metrics.contains(&format!("peer=\"{}\"", id("cart"))), "the peer saw the workload's SPIFFE ID");

    let refused = |reason: &str| metric(&dpu.node.metrics_text(), "weir_connections_refused_total", &[reason]);
    assert_eq!(through(&dpu, &preamble, 10).await, (None, false), "the same preamble again");
    assert_eq!(refused("host_preamble_replayed"), 1.0);
    assert_eq!(through(&dpu, &sealed(&[0x11; 32], "cart"), 10).await, (None, false), "a process without the key");
    assert_eq!(refused("host_preamble_forged"), 1.0);
    assert_eq!(through(&dpu, &sealed(&KEY, "intruder"), 10).await, (None, false), "a workload not registered");
    assert_eq!(refused("unregistered_workload"), 1.0);
    assert_eq!(through(&dpu, b"GET / HTTP/1.1\r\nHost: echo\r\n\r\n\r\n\r\n\r\n\r\n\r\n\r\n", 10).await, (None, false));
    assert_eq!(refused("host_preamble_malformed"), 1.0);
    assert_eq!(mesh.backend.accepted.load(Ordering::Relaxed), served, "no refused connection reached the service");

    // The genuine workload still gets through with a fresh preamble.
    assert_eq!(through(&dpu, &sealed(&KEY, "cart"), 1000).await, (Some(Status::Ok), true));
}
