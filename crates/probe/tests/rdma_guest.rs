//! Soft-RoCE in the qemu guest (scripts/test.sh `ktls`, tests/vm/run-in-vm.sh as cargo runner):
//! an `rxe0` device over a dummy netdev, real verbs traffic from `ibv_rc_pingpong`, and the probe
//! must see it: its QPs in the RDMA netlink dump with their owners' pids, the port's counters
//! rising, and the rdma cgroup controller refusing a context over its limit while allowing one
//! under it. Everything (addresses, traffic) stays inside the guest kernel. Outside the qemu guest
//! it fails with the reason: it changes the kernel's network and cgroup state.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use weir_probe::rdma_cgroup::{self, RdmaLimit};
use weir_probe::rdma_res::{self, QpState, QpType, QueuePair};

const DEVICE: &str = "rxe0";
const NETDEV: &str = "weir-rxe";
/// The soft-RoCE device's address: on a dummy netdev inside the guest, so it reaches nothing.
const ADDR: &str = "10.77.0.1";
/// TCG runs ~50x slower than native: generous, still bounded.
const WAIT: Duration = Duration::from_secs(60);

/// Makes `rxe0` once per test binary; its RoCEv2 GID index for [`ADDR`].
fn soft_roce() -> u32 {
    static GID: OnceLock<u32> = OnceLock::new();
    *GID.get_or_init(|| {
        assert_eq!(
            std::env::var("WEIR_IN_GUEST").as_deref(),
            Ok("qemu"),
            "this suite changes the kernel's network and cgroups: run it in the qemu guest (scripts/test.sh ktls)"
        );
        run("ip", &["link", "add", NETDEV, "type", "dummy"]);
        run("ip", &["addr", "add", &format!("{ADDR}/24"), "dev", NETDEV]);
        run("ip", &["link", "set", NETDEV, "up"]);
        run("rdma", &["link", "add", DEVICE, "type", "rxe", "netdev", NETDEV]);
        gid_index()
    })
}

/// The GID table entry rxe made for [`ADDR`] as RoCE v2 (an IPv4-mapped IPv6 GID).
fn gid_index() -> u32 {
    let port = PathBuf::from(format!("/sys/class/infiniband/{DEVICE}/ports/1"));
    let mapped = "0000:0000:0000:0000:0000:ffff:0a4d:0001"; // ::ffff:10.77.0.1
    let deadline = Instant::now() + WAIT;
    loop {
        for i in 0..16u32 {
            let gid = std::fs::read_to_string(port.join(format!("gids/{i}"))).unwrap_or_default();
            let kind = std::fs::read_to_string(port.join(format!("gid_attrs/types/{i}"))).unwrap_or_default();
            if gid.trim() == mapped && kind.trim() == "RoCE v2" {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no RoCE v2 GID for {ADDR} in {}", port.display());
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// `ibv_rc_pingpong` on [`DEVICE`]: a server (no peer) or a client of 127.0.0.1 (the TCP
/// exchange of QP numbers), optionally started inside a cgroup.
fn pingpong(gid: u32, port: u16, iters: u32, peer: Option<&str>, cgroup: Option<&Path>) -> Child {
    let mut args = vec![
        "-d".to_owned(),
        DEVICE.to_owned(),
        "-g".to_owned(),
        gid.to_string(),
        "-n".to_owned(),
        iters.to_string(),
        "-p".to_owned(),
        port.to_string(),
    ];
    args.extend(peer.map(str::to_owned));
    let mut cmd = match cgroup {
        // The shell joins the cgroup, then becomes the pingpong: the pid we hold is the owner.
        Some(dir) => {
            let mut c = Command::new("sh");
            c.arg("-c").arg("echo $$ > \"$0/cgroup.procs\" && exec ibv_rc_pingpong \"$@\"").arg(dir).args(&args);
            c
        }
        None => {
            let mut c = Command::new("ibv_rc_pingpong");
            c.args(&args);
            c
        }
    };
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("ibv_rc_pingpong (scripts/setup.sh installs ibverbs-utils)")
}

/// Polls `what` until it returns something, or fails after [`WAIT`].
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Short: a pingpong of 1000 exchanges lasts about a second under TCG.
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until a pingpong server listens for its peer (TCP `port`), seen through the probe's
/// own sock_diag dump.
fn listening(port: u16) {
    until(&format!("a listener on TCP port {port}"), || {
        let sockets = weir_probe::tcp_sockets().expect("sock_diag dump");
        sockets.iter().any(|s| s.state.name() == "LISTEN" && s.local.port() == port).then_some(())
    });
}

fn qps_of(pid: u32) -> Vec<QueuePair> {
    rdma_res::queue_pairs()
        .unwrap_or_else(|e| panic!("unavailable: {e}"))
        .into_iter()
        .filter(|q| q.pid == Some(pid))
        .collect()
}

fn signal(sig: &str, pid: u32) {
    run("kill", &[sig, &pid.to_string()]);
}

/// Waits for a pingpong to exit (killed after [`WAIT`]: a hung verbs call must not hold the
/// guest until the runner's timeout) and prints what it said.
fn finish(mut child: Child, who: &str) -> Output {
    let deadline = Instant::now() + WAIT;
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("wait");
            panic!("{who} still running after {WAIT:?}: {}", String::from_utf8_lossy(&out.stdout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Exited: the pipes hold all it wrote (a few lines, far below a pipe's capacity).
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{who}: {e}"));
    eprintln!(
        "--- {who}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The `N iters in S seconds` line's N.
fn iters(out: &Output) -> Option<u32> {
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| l.split_once(" iters in ")?.0.trim().parse().ok())
}

fn counters() -> weir_probe::rdma::RdmaPort {
    let devices = weir_probe::rdma::devices();
    let devices = devices.value().unwrap_or_else(|| panic!("/sys/class/infiniband unreadable: {devices:?}"));
    let dev = devices.iter().find(|d| d.name == DEVICE).unwrap_or_else(|| panic!("{DEVICE} not in {devices:?}"));
    dev.ports.first().cloned().unwrap_or_else(|| panic!("{DEVICE} has no port"))
}

#[test]
fn pingpong_qps_are_listed_with_their_owners_and_the_port_counters_rise() {
    let gid = soft_roce();
    let before = counters();
    assert_eq!(before.link_layer, "Ethernet", "rxe is RoCE");
    let server = pingpong(gid, 18515, 1000, None, None);
    let server_pid = server.id();
    listening(18515);
    let client = pingpong(gid, 18515, 1000, Some("127.0.0.1"), None);
    let client_pid = client.id();

    // The server reaches RTS once it has the client's QP number; stopped there, it can neither
    // finish nor answer, so both QPs stay for the dump to be read without a race.
    let server_qp =
        until("the server's QP in RTS", || qps_of(server_pid).into_iter().find(|q| q.state == QpState::RTS));
    signal("-STOP", server_pid);
    let client_qps = qps_of(client_pid);
    let dump = rdma_res::queue_pairs().expect("dump");
    signal("-CONT", server_pid);
    eprintln!("QP dump while both ran: {dump:#?}");
    for payload in rdma_res::raw_qp_payloads().expect("raw dump") {
        let hex: String = payload.iter().map(|b| format!("{b:02x}")).collect();
        eprintln!("RES_QP_GET payload ({} bytes): {hex}", payload.len());
    }

    assert_eq!(client_qps.len(), 1, "one QP of the client (pid {client_pid}): {dump:#?}");
    let client_qp = &client_qps[0];
    for (qp, pid) in [(&server_qp, server_pid), (client_qp, client_pid)] {
        assert_eq!((qp.device.as_str(), qp.qp_type, qp.port), (DEVICE, QpType::RC, Some(1)), "{qp:?}");
        assert_eq!(qp.kernel_owner, None, "a user QP: {qp:?}");
        assert_eq!(qp.owner_name().as_deref(), Some("ibv_rc_pingpong"), "pid {pid} by /proc/PID/comm");
    }
    assert_eq!(server_qp.rqpn, Some(client_qp.lqpn), "the server's QP is connected to the client's");
    assert!(
        dump.iter()
            .any(|q| q.qp_type.name() == "GSI" && q.kernel_owner.as_deref() == Some("ib_core") && q.pid.is_none()),
        "the kernel's own GSI QP, owned by ib_core: {dump:#?}"
    );

    let (client, server) = (finish(client, "client"), finish(server, "server"));
    assert!(client.status.success() && server.status.success(), "both ends exit 0");
    assert_eq!((iters(&client), iters(&server)), (Some(1000), Some(1000)), "1000 exchanges each way");
    assert!(qps_of(client_pid).is_empty() && qps_of(server_pid).is_empty(), "QPs go with their processes");

    let after = counters();
    for (name, at_least) in
        [("hw:rdma_sends", 2000), ("hw:rdma_recvs", 2000), ("hw:sent_pkts", 2000), ("hw:rcvd_pkts", 2000)]
    {
        let (b, a) = (before.counter(name), after.counter(name));
        let (Some(b), Some(a)) = (b, a) else { panic!("{name} missing: {:?}", after.counters) };
        assert!(a - b >= at_least, "{name} rose by {} (from {b} to {a}), at least {at_least} expected", a - b);
    }
    eprintln!("rxe0 port 1 counters after: {:?}", after.counters);
}

/// A cgroup for this test under a parent with the rdma controller enabled; removed on drop.
struct Cgroups {
    parent: PathBuf,
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        for child in ["deny", "objects", "allow"] {
            let _ = std::fs::remove_dir(self.parent.join(child));
        }
        let _ = std::fs::remove_dir(&self.parent);
    }
}

#[test]
fn rdma_cgroup_limits_refuse_a_context_over_the_limit_and_count_usage_under_it() {
    let gid = soft_roce();
    let root = rdma_cgroup::v2_root().expect("cgroup2 mounted (the guest's init mounts it)");
    rdma_cgroup::controller_available(&root).unwrap_or_else(|e| panic!("{e}"));
    let cgroups = Cgroups { parent: root.join("weir-rdma-test") };
    let [deny, objects, allow] = ["deny", "objects", "allow"].map(|c| cgroups.parent.join(c));
    for dir in [&deny, &objects, &allow] {
        std::fs::create_dir_all(dir).expect("mkdir cgroup");
    }
    rdma_cgroup::enable(&root, &deny).expect("+rdma down to the test's parent");
    assert!(rdma_cgroup::enabled(&deny) && rdma_cgroup::enabled(&allow), "rdma in the children's cgroup.controllers");

    let limit = |hca_handle, hca_object| RdmaLimit { device: DEVICE.into(), hca_handle, hca_object };
    rdma_cgroup::set_max(&deny, &[limit(Some(0), Some(0))]).expect("write rdma.max");
    rdma_cgroup::set_max(&objects, &[limit(Some(1), Some(0))]).expect("write rdma.max");
    rdma_cgroup::set_max(&allow, &[limit(Some(1), Some(16))]).expect("write rdma.max");
    let of = |dir: &Path| rdma_cgroup::read_max(dir).expect("read rdma.max").into_iter().find(|l| l.device == DEVICE);
    assert_eq!(of(&deny), Some(limit(Some(0), Some(0))));
    assert_eq!(of(&allow), Some(limit(Some(1), Some(16))));
    let unknown = RdmaLimit { device: "nosuch0".into(), hca_handle: Some(1), hca_object: None };
    let err = rdma_cgroup::set_max(&allow, &[unknown]).expect_err("a device the kernel does not know");
    assert!(err.to_string().contains("No such device"), "ENODEV expected: {err}");

    // hca_handle=0: opening the device (a ucontext) is refused.
    let refused = finish(pingpong(gid, 18516, 10, None, Some(&deny)), "pingpong in deny");
    assert!(!refused.status.success(), "a context over hca_handle=0 must fail");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(why.contains("Couldn't get context"), "refused at ibv_open_device: {why}");
    // hca_handle=1, hca_object=0: the context opens, its first object (the PD) is refused.
    let refused = finish(pingpong(gid, 18517, 10, None, Some(&objects)), "pingpong in objects");
    let why = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success() && why.contains("Couldn't allocate PD"), "refused at ibv_alloc_pd: {why}");

    // Under its limits the server runs, and its cgroup's usage shows while it holds them.
    let server = pingpong(gid, 18518, 100, None, Some(&allow));
    let usage = until("rdma.current of the allowed server", || {
        let current = rdma_cgroup::read_current(&allow).expect("read rdma.current");
        current.into_iter().find(|u| u.device == DEVICE && u.hca_handle == 1 && u.hca_object >= 4)
    });
    eprintln!("rdma.current while the server waits: {usage:?}");
    assert!(usage.hca_object <= 16, "within the limit: {usage:?}");
    // What `weir scan` shows: the server's queue pair under its cgroup, with its use and limit.
    let name = format!("/{}", allow.strip_prefix(rdma_cgroup::v2_root().unwrap()).unwrap().display());
    let uses = weir_probe::rdma_use::by_cgroup().value().cloned().expect("queue pairs readable");
    let mine = uses.iter().find(|u| u.cgroup == name).unwrap_or_else(|| panic!("{name} in {uses:?}"));
    assert!(mine.queue_pairs >= 1 && mine.connected == 0, "waiting, not connected: {mine:?}");
    let current = mine.current.value().expect("rdma.current").join(" ");
    assert!(current.contains("rxe0 hca_handle=1"), "{current}");
    assert!(mine.max.value().expect("rdma.max").join(" ").contains("hca_object=16"), "{mine:?}");
    listening(18518);
    let client = finish(pingpong(gid, 18518, 100, Some("127.0.0.1"), None), "client of the allowed server");
    let server = finish(server, "pingpong in allow");
    assert!(server.status.success() && client.status.success(), "allowed under its limits");
    assert_eq!(iters(&server), Some(100));
    let released = rdma_cgroup::read_current(&allow).expect("read rdma.current");
    assert!(
        released.iter().any(|u| u.device == DEVICE && u.hca_handle == 0 && u.hca_object == 0),
        "released on exit: {released:?}"
    );
}
