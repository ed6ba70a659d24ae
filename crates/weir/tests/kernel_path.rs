//! The kernel path end to end on this host kernel, as root: a process started with
//! `weir exec` reaches mesh services through eBPF capture (raw TCP and curl), the server node
//! sees the workload's own SPIFFE ID, deny rules refuse `connect()` with no packet sent, and a
//! clean stop leaves nothing attached.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const TD: &str = "weir.local";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Echo backend (raw TCP).
async fn echo() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    a
}

/// HTTP/1.0 backend: answers every request with a fixed body and closes.
async fn http() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 14\r\n\r\nhello via weir").await;
            });
        }
    });
    a
}

fn weir_exec(config: &std::path::Path, workload: &str, script: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["exec", "--config", config.to_str().unwrap(), "--workload", workload, "--", "bash", "-c", script])
        .output()
        .expect("run weir exec");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_owned()
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && labels.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Removes pins and cgroups if the test fails before the node's clean stop.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.0));
        if let Ok(root) = weir_ebpf::cgroup::v2_root() {
            let _ = weir_ebpf::cgroup::remove(&root.join(&self.0).join("web"));
            let _ = weir_ebpf::cgroup::remove(&root.join(&self.0));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_capture_identity_deny_and_clean_stop() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, TD).unwrap();
    let (echo, http) = (echo().await, http().await);
    let web = format!("spiffe://{TD}/ns/test/sa/web");
    let common = |sa: &str| {
        format!("trust_domain = \"{TD}\"\n[identity]\nnamespace = \"test\"\nservice_account = \"{sa}\"\nca_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n[ktls]\nmode = \"off\"\n", ca_dir.display())
    };
    let server_cfg = format!(
        "{}[inbound]\nlisten = \"127.0.0.1:0\"\n[[inbound.services]]\nname = \"echo\"\nbackend = \"{echo}\"\nallow = [\"{web}\"]\n[[inbound.services]]\nname = \"http\"\nbackend = \"{http}\"\nallow = [\"{web}\"]\n",
        common("server")
    );
    let server =
        weir_app::Node::start(weir_config::parse(&server_cfg, "server.toml").unwrap()).await.expect("server node");
    let inbound = server.inbound_addr().unwrap();

    let tag = format!("weir-it-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    let blocked = free_port();
    let blocked_listener = std::net::TcpListener::bind(("127.0.0.1", blocked)).unwrap();
    let client_cfg = format!(
        "{}[kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"127.0.0.1:{}\"\n\
         [[workloads]]\nname = \"web\"\nservice_account = \"web\"\ndeny = [\"127.0.0.1:{blocked}\"]\nmax_connections = 50\n\
         [[outbound]]\nservice = \"echo\"\npeer = \"{inbound}\"\npeer_id = \"spiffe://{TD}/ns/test/sa/server\"\ncapture = [\"127.0.0.77:7\", \"[::ffff:127.0.0.78]:7\", \"[::1]:7\"]\n\
         [[outbound]]\nservice = \"http\"\npeer = \"{inbound}\"\npeer_id = \"spiffe://{TD}/ns/test/sa/server\"\ncapture = [\"127.0.0.77:80\"]\n",
        common("client"),
        free_port()
    );
    let client_path = dir.path().join("client.toml");
    std::fs::write(&client_path, &client_cfg).unwrap();
    let client = weir_app::Node::start(weir_config::load(&client_path).unwrap())
        .await
        .expect("client node with the kernel path");

    let cfg = client_path.clone();
    let raw = tokio::task::spawn_blocking(move || {
        weir_exec(
            &cfg,
            "web",
            "exec 3<>/dev/tcp/127.0.0.77/7 && printf 'mesh-bytes-0123456789' >&3 && timeout 5 head -c 21 <&3",
        )
    })
    .await
    .unwrap();
    assert_eq!(raw, "mesh-bytes-0123456789", "raw TCP through capture, byte-exact");

    let cfg = client_path.clone();
    let curl = tokio::task::spawn_blocking(move || weir_exec(&cfg, "web", "curl -s --max-time 5 http://127.0.0.77/"))
        .await
        .unwrap();
    assert_eq!(curl, "hello via weir", "curl through capture");

    let cfg = client_path.clone();
    let mapped = tokio::task::spawn_blocking(move || {
        weir_exec(&cfg, "web", "exec 3<>/dev/tcp/::ffff:127.0.0.78/7 && printf 'v6' >&3 && timeout 5 head -c 2 <&3")
    })
    .await
    .unwrap();
    assert_eq!(mapped, "v6", "IPv4-mapped IPv6 destination captured like IPv4");

    let cfg = client_path.clone();
    let v6 = tokio::task::spawn_blocking(move || {
        weir_exec(&cfg, "web", "exec 3<>/dev/tcp/::1/7 && printf 'ipv6' >&3 && timeout 5 head -c 4 <&3")
    })
    .await
    .unwrap();
    assert_eq!(v6, "ipv6", "IPv6 destination captured");

    // While a captured connection is open, its record joins the app's own socket as the
    // kernel saw it (sockops) with the mesh leg Weir holds.
    let cfg = client_path.clone();
    let held = tokio::task::spawn_blocking(move || {
        weir_exec(&cfg, "web", "exec 3<>/dev/tcp/127.0.0.77/7 && printf 'held' >&3 && head -c 4 <&3 && sleep 4")
    });
    let mut joined = None;
    for _ in 0..60 {
        let records = client.connections();
        joined = records.into_iter().find(|r| {
            r.captured.as_ref().is_some_and(|c| c.workload == "web") && r.app_tcp.is_some_and(|a| a.bytes_acked >= 4)
        });
        if joined.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = joined.expect("an open captured connection's record with the app socket's kernel facts");
    let app = r.app_tcp.unwrap();
    assert!(app.srtt_us > 0 && r.bytes_to_peer == 4, "{r:?}");
    assert_eq!(r.peer, format!("spiffe://{TD}/ns/test/sa/server"));
    assert_eq!(held.await.unwrap(), "held");

    // Deny: connect() fails in the kernel, and no SYN reaches the wire.
    let pcap = dir.path().join("deny.pcap");
    let mut dump = Command::new("tcpdump")
        .args(["-i", "lo", "--immediate-mode", "-U", "-w", pcap.to_str().unwrap(), "tcp", "port", &blocked.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("tcpdump");
    {
        use std::io::BufRead;
        let mut line = String::new();
        std::io::BufReader::new(dump.stderr.take().unwrap()).read_line(&mut line).unwrap();
        assert!(line.contains("listening"), "tcpdump: {line}");
    }
    let cfg = client_path.clone();
    let denied = tokio::task::spawn_blocking(move || {
        weir_exec(&cfg, "web", &format!("exec 3<>/dev/tcp/127.0.0.1/{blocked} && echo CONNECTED"))
    })
    .await
    .unwrap();
    assert!(denied.contains("Operation not permitted"), "denied connect fails in connect(): {denied}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    Command::new("kill").args(["-INT", &dump.id().to_string()]).status().unwrap();
    let out = dump.wait_with_output().unwrap();
    let captured = std::fs::read(&pcap).unwrap();
    assert_eq!(
        captured.len(),
        24,
        "the capture holds only its header: no packet was sent ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(blocked_listener);

    let s = server.metrics_text();
    assert_eq!(
        metric(&s, "weir_connections_opened_total", &[&format!("peer=\"{web}\"")]),
        5.0,
        "the server saw the workload's own identity:\n{s}"
    );

    let c = client.metrics_text();
    let server_id = format!("peer=\"spiffe://{TD}/ns/test/sa/server\"");
    assert!(
        metric(&c, "weir_kernel_tcp_bytes_total", &["workload=\"web\"", &server_id, "direction=\"acked\""]) > 0.0,
        "kernel facts of captured connections are labelled with the mesh peer:\n{c}"
    );
    client.shutdown(Duration::from_secs(5)).await;
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/{tag}")).exists(), "a clean stop removes the pins");
    let root = weir_ebpf::cgroup::v2_root().unwrap();
    assert!(!root.join(&tag).exists(), "a clean stop removes Weir's cgroups");
}

/// A network namespace joined to this one by a veth pair, torn down on drop.
struct LossyPeer {
    ns: String,
}

impl LossyPeer {
    /// Peer at 10.201.<n>.2 behind a veth whose host end has a tbf queue; `loss_pct` of the
    /// packets sent to it are dropped by nftables (there is no netem here).
    fn new(n: u8, loss_pct: u32) -> Self {
        let id = std::process::id() % 100_000;
        let (ns, host_if, peer_if, table) =
            (format!("weirloss{id}"), format!("wlh{id}"), format!("wlp{id}"), format!("weirloss{id}"));
        let sh = |cmd: &str| {
            let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
            assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
        };
        let me = Self { ns: ns.clone() };
        sh(&format!("ip netns add {ns}"));
        sh(&format!("ip link add {host_if} type veth peer name {peer_if}"));
        sh(&format!("ip link set {peer_if} netns {ns}"));
        sh(&format!("ip addr add 10.201.{n}.1/24 dev {host_if} && ip link set {host_if} up"));
        sh(&format!("nsenter --net=/run/netns/{ns} sh -c 'ip addr add 10.201.{n}.2/24 dev {peer_if} && ip link set {peer_if} up && ip link set lo up'"));
        sh(&format!("tc qdisc add dev {host_if} root tbf rate 40mbit burst 32kb latency 200ms"));
        // Dropped on arrival in the peer's namespace: a drop in our own OUTPUT hook would be a
        // local send failure, which TCP does not count as a retransmission.
        sh(&format!(
            "nsenter --net=/run/netns/{ns} sh -c \"nft add table inet {table} && nft add chain inet {table} in '{{ type filter hook input priority 0; }}' && \
             nft add rule inet {table} in tcp dport 9000 numgen random mod 100 '<' {loss_pct} drop\""
        ));
        me
    }

    /// A sink on 10.201.<n>.2:9000 in the namespace that reads one connection to its end.
    fn sink(&self, n: u8) -> std::process::Child {
        let py = format!(
            "import socket\ns=socket.socket()\ns.bind(('10.201.{n}.2',9000))\ns.listen()\nprint('ready',flush=True)\nc,_=s.accept()\nt=0\nwhile True:\n  d=c.recv(65536)\n  if not d: break\n  t+=len(d)\nprint(t,flush=True)\n"
        );
        let mut child = Command::new("nsenter")
            .args([&format!("--net=/run/netns/{}", self.ns), "python3", "-c", &py])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 sink in the namespace");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.as_mut().unwrap()), &mut line).unwrap();
        assert_eq!(line.trim(), "ready");
        child
    }
}

impl Drop for LossyPeer {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.ns]).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l4_telemetry_under_loss_shows_retransmits_and_rtt_rise() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, TD).unwrap();
    let tag = format!("weir-loss-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    let cfg = format!(
        "trust_domain = \"{TD}\"\n[identity]\nnamespace = \"test\"\nservice_account = \"node\"\nca_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"127.0.0.1:{}\"\n\
         [[workloads]]\nname = \"web\"\nservice_account = \"web\"\n",
        ca_dir.display(),
        free_port()
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, cfg).unwrap();
    let node = weir_app::Node::start(weir_config::load(&path).unwrap()).await.expect("node with the kernel path");

    let peer = LossyPeer::new(7, 5);
    let sink = peer.sink(7);
    let cfg = path.clone();
    let sent = tokio::task::spawn_blocking(move || {
        weir_exec(&cfg, "web", "head -c 6000000 /dev/zero > /dev/tcp/10.201.7.2/9000 && echo SENT")
    })
    .await
    .unwrap();
    assert_eq!(sent, "SENT");
    let out = sink.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "6000000", "the sink got every byte despite the loss");
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m = node.metrics_text();
    let retrans = metric(&m, "weir_kernel_tcp_retransmits_total", &["workload=\"web\""]);
    assert!(retrans > 0.0, "retransmits visible for the workload under 5% loss:\n{m}");
    assert!(
        metric(&m, "weir_kernel_tcp_bytes_total", &["workload=\"web\"", "direction=\"acked\""]) >= 6_000_000.0,
        "{m}"
    );
    assert_eq!(
        metric(&m, "weir_kernel_tcp_srtt_microseconds_count", &["workload=\"web\""]),
        1.0,
        "one closed connection observed:\n{m}"
    );
    // Loopback RTT is tens of microseconds; the tbf queue behind the veth pushes it to
    // milliseconds under a bulk send.
    let srtt = metric(&m, "weir_kernel_tcp_srtt_microseconds_sum", &["workload=\"web\""]);
    assert!(srtt > 1000.0, "RTT rise visible: srtt at close {srtt} us");
    node.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_changes_kernel_rules_in_place_and_keeps_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, TD).unwrap();
    let (a, b) = (echo().await, echo().await);
    let tag = format!("weir-reload-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    let capture = free_port();
    let cfg = |deny: SocketAddr, extra: &str| {
        format!(
            "trust_domain = \"{TD}\"\n[identity]\nnamespace = \"test\"\nservice_account = \"node\"\nca_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"127.0.0.1:{capture}\"\n\
             [[workloads]]\nname = \"web\"\nservice_account = \"web\"\ndeny = [\"{deny}\"]\n{extra}",
            ca_dir.display()
        )
    };
    let path = dir.path().join("node.toml");
    std::fs::write(&path, cfg(a, "")).unwrap();
    let node = weir_app::Node::start(weir_config::load(&path).unwrap()).await.expect("node");
    let try_connect = |dst: SocketAddr| {
        let p = path.clone();
        move || weir_exec(&p, "web", &format!("exec 3<>/dev/tcp/127.0.0.1/{} && echo OK", dst.port()))
    };
    assert!(tokio::task::spawn_blocking(try_connect(a)).await.unwrap().contains("Operation not permitted"));
    assert_eq!(tokio::task::spawn_blocking(try_connect(b)).await.unwrap(), "OK");

    // A connection to b opened before the reload must survive it.
    let p = path.clone();
    let held = std::thread::spawn(move || {
        weir_exec(
            &p,
            "web",
            &format!(
                "exec 3<>/dev/tcp/127.0.0.1/{} && sleep 1.5 && printf ping >&3 && timeout 5 head -c 4 <&3",
                b.port()
            ),
        )
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let refused = node.reload(
        &weir_config::parse(&cfg(b, "[[workloads]]\nname = \"db\"\nservice_account = \"db\"\n"), "x.toml").unwrap(),
    );
    assert!(refused.is_err_and(|e| e.contains("restart")), "adding a workload needs a restart");
    assert!(
        tokio::task::spawn_blocking(try_connect(a)).await.unwrap().contains("Operation not permitted"),
        "a refused reload changed nothing"
    );
    node.reload(&weir_config::parse(&cfg(b, ""), "x.toml").unwrap()).expect("rule change applies in place");
    assert_eq!(tokio::task::spawn_blocking(try_connect(a)).await.unwrap(), "OK", "a is allowed after the reload");
    assert!(
        tokio::task::spawn_blocking(try_connect(b)).await.unwrap().contains("Operation not permitted"),
        "b is denied after the reload"
    );
    assert_eq!(held.join().unwrap(), "ping", "the connection opened before the reload kept working");
    node.shutdown(Duration::from_secs(5)).await;
}

#[test]
fn without_privileges_the_kernel_path_refuses_to_start_and_says_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, TD).unwrap();
    let tag = format!("weir-nocap-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\n[identity]\nnamespace = \"t\"\nservice_account = \"n\"\nca_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"127.0.0.1:{}\"\n\
             [[workloads]]\nname = \"web\"\nservice_account = \"web\"\n",
            ca_dir.display(),
            free_port()
        ),
    )
    .unwrap();
    // Every capability dropped from the bounding set: root without privileges.
    let out = Command::new("setpriv")
        .args([
            "--bounding-set=-all",
            "--inh-caps=-all",
            env!("CARGO_BIN_EXE_weir"),
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .output()
        .expect("setpriv (util-linux)");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "must not run unenforced:\n{text}");
    assert!(
        text.contains("CAP_BPF") && text.contains("kernel.mode = \"off\""),
        "names what is missing and the alternative:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_weir_leaves_policy_enforced_restart_adopts_clean_stop_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, TD).unwrap();
    let tag = format!("weir-kill-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    let blocked = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocked.local_addr().unwrap().port();
    let admin = free_port();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        format!(
            "trust_domain = \"{TD}\"\n[identity]\nnamespace = \"t\"\nservice_account = \"n\"\nca_dir = \"{}\"\n[admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"127.0.0.1:{}\"\n\
             [[workloads]]\nname = \"web\"\nservice_account = \"web\"\ndeny = [\"127.0.0.1:{port}\"]\n",
            ca_dir.display(),
            free_port()
        ),
    )
    .unwrap();
    let start = |log: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["run", "--config", cfg.to_str().unwrap()])
            .stderr(std::fs::File::create(dir.path().join(log)).unwrap())
            .spawn()
            .expect("weir run");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok() {
                return child;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("weir run did not come up: {}", std::fs::read_to_string(dir.path().join(log)).unwrap_or_default());
    };
    let probe = || weir_exec(&cfg, "web", &format!("exec 3<>/dev/tcp/127.0.0.1/{port} && echo OK"));

    let mut first = start("first.log");
    assert!(probe().contains("Operation not permitted"), "enforced while running");
    first.kill().unwrap(); // SIGKILL: no clean stop
    first.wait().unwrap();
    assert!(probe().contains("Operation not permitted"), "still enforced with no Weir running");

    let second = start("second.log");
    // Info lines reach the file in batches (at most 100 ms late).
    let mut log = String::new();
    for _ in 0..40 {
        log = std::fs::read_to_string(dir.path().join("second.log")).unwrap();
        if log.contains("adopted eBPF programs") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(log.contains("adopted eBPF programs"), "the restart adopts the pinned programs:\n{log}");
    assert!(probe().contains("Operation not permitted"), "enforced after adoption");
    Command::new("kill").args(["-TERM", &second.id().to_string()]).status().unwrap();
    let status = second.wait_with_output().unwrap().status;
    assert!(status.success(), "clean stop");
    assert!(!std::path::Path::new(&format!("/sys/fs/bpf/{tag}")).exists(), "a clean stop removes the pins");
    let root = weir_ebpf::cgroup::v2_root().unwrap();
    assert!(!root.join(&tag).exists(), "and the cgroups");
    drop(blocked);
}
