//! RDMA in the mesh, in the qemu guest with soft-RoCE (scripts/test.sh `ktls`,
//! tests/vm/run-in-vm.sh as cargo runner). One node runs the kernel path for five workloads;
//! `ibv_rc_pingpong` exchanges its queue-pair numbers over TCP, which the node carries as the
//! mesh service `pingpong` (captured, mTLS, policy) and records as an RDMA session intent.
//! Checked: 1000 exchanges complete through a recorded bootstrap with both identities, the QPs
//! joined to their workloads and authorized, port counters rising; a workload without RDMA
//! refused by the kernel (and the node says it is denied); a bootstrap from an identity the
//! service does not admit refused by policy, so no session starts; QPs made outside any
//! bootstrap flagged. Everything stays inside the guest kernel.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::{id, metric, node_config, Opts};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weir_app::Node;

const DEVICE: &str = "rxe0";
const ADDR: &str = "10.77.0.1";
/// Where the pingpong server listens; clients reach it as `ADDR:CAPTURED` through the node.
const SERVER_PORT: u16 = 18516;
const CAPTURED: u16 = 18515;
const WAIT: Duration = Duration::from_secs(90);

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Makes `rxe0` over a dummy netdev; its RoCE v2 GID index for [`ADDR`].
fn soft_roce() -> u32 {
    assert_eq!(std::env::var("WEIR_IN_GUEST").as_deref(), Ok("qemu"), "run this suite in the qemu guest");
    run("ip", &["link", "add", "weir-rxe", "type", "dummy"]);
    run("ip", &["addr", "add", &format!("{ADDR}/24"), "dev", "weir-rxe"]);
    run("ip", &["link", "set", "weir-rxe", "up"]);
    run("rdma", &["link", "add", DEVICE, "type", "rxe", "netdev", "weir-rxe"]);
    let port = PathBuf::from(format!("/sys/class/infiniband/{DEVICE}/ports/1"));
    until("a RoCE v2 GID", || {
        (0..16u32).find(|i| {
            let gid = std::fs::read_to_string(port.join(format!("gids/{i}"))).unwrap_or_default();
            let kind = std::fs::read_to_string(port.join(format!("gid_attrs/types/{i}"))).unwrap_or_default();
            gid.trim().ends_with("ffff:0a4d:0001") && kind.trim() == "RoCE v2"
        })
    })
}

fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `ibv_rc_pingpong` inside workload cgroup `cgroup`: a server on `port`, or a client of
/// `peer:port`.
fn pingpong(cgroup: &Path, gid: u32, port: u16, peer: Option<&str>) -> Child {
    let mut args = vec!["-d", DEVICE, "-n", "1000"].into_iter().map(str::to_owned).collect::<Vec<_>>();
    args.extend(["-g".to_owned(), gid.to_string(), "-p".to_owned(), port.to_string()]);
    args.extend(peer.map(str::to_owned));
    Command::new("sh")
        .arg("-c")
        .arg("echo $$ > \"$0/cgroup.procs\" && exec ibv_rc_pingpong \"$@\"")
        .arg(cgroup)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ibv_rc_pingpong (scripts/setup.sh installs ibverbs-utils)")
}

fn finish(mut child: Child) -> Output {
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn said(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn listening(port: u16) {
    until("the pingpong server's listener", || {
        let sockets = weir_probe::tcp_sockets().unwrap();
        sockets.iter().any(|s| s.state.name() == "LISTEN" && s.local.port() == port).then_some(())
    });
}

/// Waits until `pid` owns a connected (RTS) QP, then stops it so the node's watch sees the
/// pair before the exchange ends (1000 exchanges last about a second under TCG).
fn stop_when_connected(pid: u32) {
    until("a connected QP", || {
        let qps = weir_probe::rdma_res::queue_pairs().unwrap();
        qps.iter().any(|q| q.pid == Some(pid) && q.state == weir_probe::rdma_res::QpState::RTS).then_some(())
    });
    run("kill", &["-STOP", &pid.to_string()]);
}

async fn get(admin: SocketAddr, path: &str) -> String {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(admin).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(WAIT, exchange).await.unwrap_or_else(|_| panic!("admin {path}: no answer"));
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// The node's `/rdma` report, once `ready` holds for it.
async fn rdma_report(admin: SocketAddr, ready: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let report: serde_json::Value = serde_json::from_str(&get(admin, "/rdma").await).unwrap();
        if ready(&report) {
            return report;
        }
        assert!(Instant::now() < deadline, "/rdma never showed it: {report}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn qps_of<'a>(report: &'a serde_json::Value, workload: &str) -> Vec<&'a serde_json::Value> {
    let qps = report["queue_pairs"].as_array().unwrap();
    qps.iter().filter(|q| q["workload"] == workload && q["authorized"].is_boolean()).collect()
}

struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.0));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rdma_sessions_bootstrap_through_the_mesh_and_their_queue_pairs_are_joined_to_workloads() {
    let gid = soft_roce();
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, common::TD).unwrap();
    let tag = "weir-rdma";
    let _cleanup = Cleanup(tag.to_owned());
    let inbound = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let capture = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let workload = |name: &str, rdma: bool| {
        let allow = if rdma { "[workloads.rdma]\nmax_handles = 4\n" } else { "" };
        format!("[[workloads]]\nname = \"{name}\"\nservice_account = \"{name}\"\n{allow}")
    };
    let cfg = format!(
        "{}[kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"{capture}\"\n\
         {}{}{}{}{}\
         [inbound]\nlisten = \"{inbound}\"\n[[inbound.services]]\nname = \"pingpong\"\nbackend = \"127.0.0.1:{SERVER_PORT}\"\n\
         allow = [\"{}\"]\nrdma_bootstrap = true\nworkload = \"server\"\n\
         [[outbound]]\nservice = \"pingpong\"\npeer = \"{inbound}\"\npeer_id = \"{}\"\ncapture = [\"{ADDR}:{CAPTURED}\"]\nrdma_bootstrap = true\n",
        node_config(&ca_dir, "node", &Opts::new("off")),
        workload("client", true),
        workload("server", true),
        workload("rogue", true),
        workload("intruder", true),
        workload("denied", false),
        id("client"),
        id("node"),
    );
    let node = Node::start(weir_config::parse(&cfg, "rdma.toml").expect("config")).await.expect("node");
    let admin = node.admin_addr();
    let cgroup = |w: &str| weir_ebpf::cgroup::v2_root().unwrap().join(tag).join(w);
    let counter = |text: &str, name: &str| metric(text, "weir_rdma_port_counter", &[&format!("counter=\"hw:{name}\"")]);

    // The limits are written once the watch sees rxe0.
    until("rdma.max written", || {
        let max = std::fs::read_to_string(cgroup("denied").join("rdma.max")).unwrap_or_default();
        max.contains("rxe0 hca_handle=0 hca_object=0").then_some(())
    });
    let before = node.metrics_text();

    // 1. A bootstrap through the mesh, both ends recorded; the pair runs 1000 exchanges.
    let server = pingpong(&cgroup("server"), gid, SERVER_PORT, None);
    listening(SERVER_PORT);
    let client = pingpong(&cgroup("client"), gid, CAPTURED, Some(ADDR));
    let server_pid = server.id();
    stop_when_connected(server_pid);
    let report = rdma_report(admin, |r| !qps_of(r, "server").is_empty() && !qps_of(r, "client").is_empty()).await;
    for w in ["server", "client"] {
        let qps = qps_of(&report, w);
        assert_eq!(qps.len(), 1, "{w}: {report}");
        assert_eq!(qps[0]["authorized"], true, "{w}: {report}");
        assert_eq!(qps[0]["identity"], id(w).to_string());
    }
    assert_eq!(qps_of(&report, "server")[0]["pid"], server_pid);
    let intents = report["intents"].as_array().unwrap();
    let inbound_intent = intents.iter().find(|i| i["direction"] == "inbound").expect("inbound intent");
    assert_eq!(inbound_intent["workload"], "server");
    assert_eq!(inbound_intent["local_id"], id("server").to_string());
    assert_eq!(inbound_intent["peer_id"], id("client").to_string());
    let outbound_intent = intents.iter().find(|i| i["direction"] == "outbound").expect("outbound intent");
    assert_eq!(outbound_intent["workload"], "client");
    assert_eq!(outbound_intent["local_id"], id("client").to_string());
    run("kill", &["-CONT", &server_pid.to_string()]);
    let (server, client) = (finish(server), finish(client));
    for (who, out) in [("server", &server), ("client", &client)] {
        assert!(out.status.success() && said(out).contains("1000 iters"), "{who}: {}", said(out));
    }
    let after = node.metrics_text();
    assert!(counter(&after, "rdma_sends") >= counter(&before, "rdma_sends") + 2000.0, "port counters rise");
    assert_eq!(metric(&after, "weir_rdma_bootstraps_total", &["direction=\"inbound\""]), 1.0);

    // 2. No RDMA allowance: the kernel refuses the device context; the node says it is denied.
    let denied = finish(pingpong(&cgroup("denied"), gid, 18530, None));
    assert!(!denied.status.success() && said(&denied).contains("Couldn't get context"), "{}", said(&denied));
    assert_eq!(metric(&after, "weir_rdma_allowed", &["workload=\"denied\""]), 0.0);
    assert_eq!(metric(&after, "weir_rdma_allowed", &["workload=\"intruder\""]), 1.0);

    // 3. An identity the service does not admit: policy refuses the bootstrap, no session starts.
    let server = pingpong(&cgroup("server"), gid, SERVER_PORT, None);
    listening(SERVER_PORT);
    let intruder = finish(pingpong(&cgroup("intruder"), gid, CAPTURED, Some(ADDR)));
    assert!(!intruder.status.success(), "the intruder's pingpong cannot exchange: {}", said(&intruder));
    let text = node.metrics_text();
    assert_eq!(metric(&text, "weir_connections_refused_total", &["reason=\"not_allowed\""]), 1.0);
    assert_eq!(metric(&text, "weir_rdma_bootstraps_total", &["direction=\"inbound\""]), 1.0, "no new intent");
    let server_qps = weir_probe::rdma_res::queue_pairs().unwrap();
    assert!(
        !server_qps.iter().any(|q| q.pid == Some(server.id()) && q.state.0 >= 2),
        "the server's QP never connected"
    );
    let mut server = server;
    let _ = server.kill();
    let _ = server.wait();

    // 4. A pair that exchanged its QP numbers outside the mesh: flagged.
    let rogue_server = pingpong(&cgroup("rogue"), gid, 18540, None);
    listening(18540);
    let rogue_client = pingpong(&cgroup("rogue"), gid, 18540, Some("127.0.0.1"));
    stop_when_connected(rogue_server.id());
    let report = rdma_report(admin, |r| qps_of(r, "rogue").len() == 2).await;
    assert!(qps_of(&report, "rogue").iter().all(|q| q["authorized"] == false), "{report}");
    let text = node.metrics_text();
    assert_eq!(metric(&text, "weir_rdma_unauthorized_qps", &["workload=\"rogue\""]), 2.0);
    assert_eq!(metric(&text, "weir_rdma_unauthorized_qps", &["workload=\"client\""]), 0.0);
    run("kill", &["-CONT", &rogue_server.id().to_string()]);
    assert!(finish(rogue_server).status.success() && finish(rogue_client).status.success());

    node.shutdown(Duration::from_millis(100)).await;
}
