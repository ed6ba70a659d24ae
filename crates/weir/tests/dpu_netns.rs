//! The host and DPU roles as separate processes in their own network namespaces, as root:
//! `host` ↔ (veth: the PCIe channel) ↔ `dpu` ↔ (veth: the wire) ↔ `peer`, and a fourth, `ca`,
//! running `weir ca serve` with a link to the host and one to the DPU: both planes take their
//! SVIDs from it (`[identity] ca_url`), the peer node from the CA's directory. A process in the
//! host's workload cgroup reaches the peer's service through host plane → DPU → mTLS → peer
//! node, byte-exact, and the peer sees the workload's SPIFFE ID; tcpdump finds the payload on
//! the host↔DPU veth and never on the wire; a process that is not a workload is refused by the
//! DPU; retransmits of the DPU's wire leg (loss injected on the wire) reach the host plane's
//! metrics for that workload and service; and with 6 s SVIDs, cutting the CA off from the DPU
//! (nft) turns the host's `/readyz` red naming the DPU and the CA, an open connection keeps
//! echoing, and restoring the CA turns it green; the DPU process killed (SIGKILL) turns the
//! host red (plane down), and started again, both are green and a new transfer is byte-exact.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const TD: &str = "weir.local";
const MARKER: &str = "WEIR-PLAINTEXT-MARKER";

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().expect("sh");
    assert!(out.status.success(), "{cmd}: {}", String::from_utf8_lossy(&out.stderr));
}

fn id(sa: &str) -> String {
    format!("spiffe://{TD}/ns/test/sa/{sa}")
}

/// The CA server's address as the DPU reaches it (the host reaches it at 10.77.3.1).
const CA_FROM_DPU: &str = "10.77.4.1:8450";

/// Four namespaces, four veth pairs, 2 % loss on packets arriving at the peer's inbound port
/// (dropped on arrival, so the DPU's TCP retransmits them); deleted on drop.
struct Topology {
    ns: [String; 4],
}

impl Topology {
    fn new() -> Self {
        let n = std::process::id() % 100_000;
        let ns = [format!("wh{n}"), format!("wd{n}"), format!("wp{n}"), format!("wc{n}")];
        let me = Self { ns: ns.clone() };
        let [h, d, p, c] = &ns;
        for name in &ns {
            sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
        }
        sh(&format!("ip link add h0 netns {h} type veth peer name d0 netns {d}"));
        sh(&format!("ip link add d1 netns {d} type veth peer name p0 netns {p}"));
        sh(&format!("ip -n {h} addr add 10.77.1.1/24 dev h0 && ip -n {h} link set h0 up"));
        sh(&format!("ip -n {d} addr add 10.77.1.2/24 dev d0 && ip -n {d} link set d0 up"));
        sh(&format!("ip -n {d} addr add 10.77.2.1/24 dev d1 && ip -n {d} link set d1 up"));
        sh(&format!("ip -n {p} addr add 10.77.2.2/24 dev p0 && ip -n {p} link set p0 up"));
        // The CA's own links: cutting the DPU's leaves the host's.
        sh(&format!("ip link add h2 netns {h} type veth peer name c0 netns {c}"));
        sh(&format!("ip link add d2 netns {d} type veth peer name c1 netns {c}"));
        sh(&format!("ip -n {h} addr add 10.77.3.2/24 dev h2 && ip -n {h} link set h2 up"));
        sh(&format!("ip -n {c} addr add 10.77.3.1/24 dev c0 && ip -n {c} link set c0 up"));
        sh(&format!("ip -n {d} addr add 10.77.4.2/24 dev d2 && ip -n {d} link set d2 up"));
        sh(&format!("ip -n {c} addr add 10.77.4.1/24 dev c1 && ip -n {c} link set c1 up"));
        sh(&format!("tc -n {d} qdisc add dev d1 root tbf rate 40mbit burst 32kb latency 200ms"));
        sh(&format!(
            "nsenter --net=/run/netns/{p} sh -c \"nft add table inet loss && nft add chain inet loss in '{{ type filter hook input priority 0; }}' && \
             nft add rule inet loss in tcp dport 15008 numgen random mod 100 '<' 2 drop\""
        ));
        me
    }

    fn host(&self) -> &str {
        &self.ns[0]
    }
    fn dpu(&self) -> &str {
        &self.ns[1]
    }
    fn peer(&self) -> &str {
        &self.ns[2]
    }
    fn ca(&self) -> &str {
        &self.ns[3]
    }

    /// Drops everything the CA sends to the DPU (on arrival in the DPU's namespace): the
    /// DPU's connects time out, as over a broken network.
    fn cut_ca_from_dpu(&self) {
        sh(&format!(
            "nsenter --net=/run/netns/{} sh -c \"nft add table inet cacut && nft add chain inet cacut in '{{ type filter hook input priority 0; }}' && \
             nft add rule inet cacut in ip saddr 10.77.4.1 drop\"",
            self.dpu()
        ));
    }

    fn restore_ca_to_dpu(&self) {
        sh(&format!("nsenter --net=/run/netns/{} nft delete table inet cacut", self.dpu()));
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "delete", ns]).status();
        }
    }
}

/// A command run inside namespace `ns` (`nsenter --net` keeps this mount namespace, so the
/// cgroup v2 mount stays visible: TESTING.md).
fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{ns}")).arg(program);
    c
}

/// A child process killed (SIGTERM, then SIGKILL) on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.0.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `weir run --role ROLE` with the config written to `dir/ROLE.toml`, inside `ns`.
fn weir_run(ns: &str, dir: &Path, role: &str, config: &str) -> Proc {
    let path = dir.join(format!("{role}.toml"));
    std::fs::write(&path, config).unwrap();
    let log = std::fs::File::create(dir.join(format!("{role}.log"))).unwrap();
    let child = in_ns(ns, env!("CARGO_BIN_EXE_weir"))
        .args(["run", "--role", role, "--config", path.to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("weir run");
    Proc(child)
}

/// GET `path` from the admin endpoint at 127.0.0.1:`port` inside `ns`: status and body.
fn admin(ns: &str, port: u16, path: &str) -> (u16, String) {
    let out = in_ns(ns, "curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + within;
    loop {
        match ok() {
            Ok(()) => return,
            Err(last) if Instant::now() > deadline => panic!("{what}: not after {within:?}: {last}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn metric(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| labels.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// tcpdump on `iface` in `ns`, writing `file`; stopped (SIGINT) and flushed by `stop`.
struct Capture(Proc);

impl Capture {
    fn start(ns: &str, iface: &str, file: &Path) -> Self {
        let mut child = in_ns(ns, "tcpdump")
            .args(["-i", iface, "-U", "-s", "0", "-B", "32768", "-w", file.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcpdump");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stderr.as_mut().unwrap()), &mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
        Self(Proc(child))
    }

    fn stop(mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0 .0.id().to_string()]).status();
        let _ = self.0 .0.wait();
    }
}

fn contains(file: &Path, needle: &str) -> bool {
    std::fs::read(file).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Removes pins and cgroups if the host plane did not stop cleanly.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(format!("/sys/fs/bpf/{}", self.0));
        if let Ok(root) = weir_ebpf::cgroup::v2_root() {
            let _ = weir_ebpf::cgroup::remove(&root.join(&self.0).join("cart"));
            let _ = weir_ebpf::cgroup::remove(&root.join(&self.0));
        }
    }
}

/// Port 9000: counts and hashes what arrives, answers at EOF. Port 9001: echoes.
const SINK: &str = r#"
import socket, hashlib, threading
def listen(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port)); s.listen(16); return s
def sink(c):
    h, n = hashlib.sha256(), 0
    while True:
        d = c.recv(65536)
        if not d: break
        h.update(d); n += len(d)
    c.sendall(f"{n} {h.hexdigest()}\n".encode()); c.close()
def echo(c):
    while True:
        d = c.recv(65536)
        if not d: break
        c.sendall(d)
    c.close()
def serve(s, f):
    while True:
        c, _ = s.accept(); threading.Thread(target=f, args=(c,), daemon=True).start()
a, b = listen(9000), listen(9001)
threading.Thread(target=serve, args=(b, echo), daemon=True).start()
print("ready", flush=True)
serve(a, sink)
"#;

/// One connection to the echo service, kept open: each stdin line is sent, its echo printed.
const LIVE: &str = r#"
import socket, sys
s = socket.create_connection(("10.96.0.8", 7), timeout=30)
for line in sys.stdin:
    s.sendall(line.encode())
    got = b""
    while not got.endswith(b"\n"):
        d = s.recv(4096)
        if not d:
            print("closed", flush=True); sys.exit(1)
        got += d
    print(got.decode().strip(), flush=True)
"#;

/// A `LIVE` client run as workload `cart`: one connection, opened before the first line.
struct Live {
    proc: Proc,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Live {
    fn start(ns: &str, host_config: &Path) -> Self {
        let mut child = in_ns(ns, env!("CARGO_BIN_EXE_weir"))
            .args([
                "exec",
                "--config",
                host_config.to_str().unwrap(),
                "--workload",
                "cart",
                "--",
                "python3",
                "-c",
                LIVE,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("live client");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(out)).map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Self { proc: Proc(child), lines }
    }

    /// Sends `text` and waits (10 s at most) for its echo.
    fn echo(&mut self, text: &str) -> Result<(), String> {
        let stdin = self.proc.0.stdin.as_mut().unwrap();
        std::io::Write::write_all(stdin, format!("{text}\n").as_bytes()).map_err(|e| format!("write: {e}"))?;
        std::io::Write::flush(stdin).map_err(|e| format!("flush: {e}"))?;
        match self.lines.recv_timeout(Duration::from_secs(10)) {
            Ok(got) if got == text => Ok(()),
            Ok(got) => Err(format!("echoed {got:?} for {text:?}")),
            Err(e) => Err(format!("no echo for {text:?}: {e}")),
        }
    }
}

const CLIENT: &str = r#"
import socket, hashlib, os
data = b"WEIR-PLAINTEXT-MARKER" * 64 + os.urandom(4 << 20)
s = socket.create_connection(("10.96.0.7", 7), timeout=60)
s.sendall(data); s.shutdown(socket.SHUT_WR)
back = b""
while True:
    d = s.recv(65536)
    if not d: break
    back += d
print(f"{len(data)} {hashlib.sha256(data).hexdigest()}", back.decode().strip(), sep="|")
"#;

/// The planes' SVID lifetime: rotation every 3 s.
const SVID_TTL_SECS: u64 = 6;

/// `weir ca serve` in the CA's namespace for clients `dpu0` (the DPU plane and the workload it
/// acts for) and `host0` (the host plane), with their tokens in `dir/{dpu,host}.token`;
/// returns once it listens.
fn ca_serve(net: &Topology, dir: &Path, ca_dir: &Path) -> Proc {
    std::fs::write(dir.join("dpu.token"), format!("{}\n", "d0".repeat(32))).unwrap();
    std::fs::write(dir.join("host.token"), format!("{}\n", "40".repeat(32))).unwrap();
    let clients = dir.join("clients.toml");
    std::fs::write(
        &clients,
        format!(
            "[[clients]]\nname = \"dpu0\"\ntoken_file = \"dpu.token\"\nids = [\"{}\", \"{}\"]\n\
             [[clients]]\nname = \"host0\"\ntoken_file = \"host.token\"\nids = [\"{}\"]\n",
            id("dpu"),
            id("cart"),
            id("host")
        ),
    )
    .unwrap();
    let log_path = dir.join("ca.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let child = in_ns(net.ca(), env!("CARGO_BIN_EXE_weir"))
        .args(["ca", "serve", "--dir", ca_dir.to_str().unwrap(), "--listen", "0.0.0.0:8450"])
        .args(["--clients", clients.to_str().unwrap()])
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("weir ca serve");
    let server = Proc(child);
    wait_for("weir ca serve listening", Duration::from_secs(10), || {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        if log.contains("CA serving") {
            Ok(())
        } else {
            Err(log)
        }
    });
    server
}

#[test]
fn a_host_workload_reaches_the_mesh_through_the_dpu_and_the_wire_sees_no_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let ca_dir = dir.path().join("ca");
    weir_identity::Ca::init(&ca_dir, TD).unwrap();
    let key_file = dir.path().join("host-channel.key");
    std::fs::write(&key_file, "5c".repeat(32)).unwrap();
    let net = Topology::new();
    let tag = format!("weir-dpu-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    let _ca = ca_serve(&net, dir.path(), &ca_dir);
    let common = |sa: &str, admin: u16, identity: &str| {
        format!(
            "trust_domain = \"{TD}\"\n[node]\nname = \"{sa}\"\n[identity]\nnamespace = \"test\"\nservice_account = \"{sa}\"\n{identity}\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n[ktls]\nmode = \"off\"\n[log]\nlevel = \"info\"\n[telemetry]\ntcp_sample_interval_ms = 200\n"
        )
    };
    // The planes ask the CA server, each over its own link, for 6 s SVIDs (rotation every 3 s);
    // the peer node reads the same CA's directory.
    let remote = |ca: &str, plane: &str| {
        format!(
            "ca_url = \"{ca}\"\nca_bundle = \"{}\"\ntoken_file = \"{}\"\nsvid_ttl_secs = {SVID_TTL_SECS}\n",
            ca_dir.join("ca.pem").display(),
            dir.path().join(format!("{plane}.token")).display()
        )
    };
    let local = format!("ca_dir = \"{}\"\n", ca_dir.display());

    let mut sink = in_ns(net.peer(), "python3").args(["-c", SINK]).stdout(Stdio::piped()).spawn().expect("sink");
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(sink.stdout.as_mut().unwrap()), &mut ready).unwrap();
    let _sink = Proc(sink);
    let peer_cfg = format!(
        "{}[inbound]\nlisten = \"10.77.2.2:15008\"\n[[inbound.services]]\nname = \"echo\"\nbackend = \"127.0.0.1:9000\"\nallow = [\"{}\"]\n\
         [[inbound.services]]\nname = \"live\"\nbackend = \"127.0.0.1:9001\"\nallow = [\"{}\"]\n",
        common("peer", 15900, &local),
        id("cart"),
        id("cart")
    );
    let _peer = weir_run(net.peer(), dir.path(), "node", &peer_cfg);
    let dpu_cfg = format!(
        "role = \"dpu\"\n{}[[outbound]]\nservice = \"echo\"\npeer = \"10.77.2.2:15008\"\npeer_id = \"{}\"\n\
         [[outbound]]\nservice = \"live\"\npeer = \"10.77.2.2:15008\"\npeer_id = \"{1}\"\n\
         [host_channel]\nlisten = \"10.77.1.2:15010\"\nkey_file = \"{}\"\nworkloads = [\"{}\"]\n\
         [host_channel.control]\naddr = \"10.77.1.2:15011\"\npeer_id = \"{}\"\ninterval_secs = 1\n",
        common("dpu", 15900, &remote(CA_FROM_DPU, "dpu")),
        id("peer"),
        key_file.display(),
        id("cart"),
        id("host")
    );
    let dpu = weir_run(net.dpu(), dir.path(), "dpu", &dpu_cfg);
    let host_cfg = format!(
        "role = \"host\"\n{}[kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"127.0.0.1:15006\"\n\
         [[workloads]]\nname = \"cart\"\nservice_account = \"cart\"\n[[outbound]]\nservice = \"echo\"\ncapture = [\"10.96.0.7:7\"]\n\
         [[outbound]]\nservice = \"live\"\ncapture = [\"10.96.0.8:7\"]\n\
         [dpu]\nhost_channel = \"10.77.1.2:15010\"\nkey_file = \"{}\"\n[dpu.control]\naddr = \"10.77.1.2:15011\"\npeer_id = \"{}\"\ninterval_secs = 1\n",
        common("host", 15900, &remote("10.77.3.1:8450", "host")),
        key_file.display(),
        id("dpu")
    );
    let host_path = dir.path().join("host.toml");
    let _host = weir_run(net.host(), dir.path(), "host", &host_cfg);
    let logs = || {
        ["ca", "node", "dpu", "host"]
            .map(|r| {
                format!(
                    "--- {r}:\n{}",
                    std::fs::read_to_string(dir.path().join(format!("{r}.log"))).unwrap_or_default()
                )
            })
            .join("\n")
    };
    for ns in [net.host(), net.dpu()] {
        wait_for(&format!("{ns} ready"), Duration::from_secs(20), || match admin(ns, 15900, "/readyz") {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}\n{}", logs())),
        });
    }

    let (host_pcap, wire_pcap) = (dir.path().join("host-dpu.pcap"), dir.path().join("wire.pcap"));
    let (on_host_link, on_wire) =
        (Capture::start(net.host(), "h0", &host_pcap), Capture::start(net.dpu(), "d1", &wire_pcap));
    let out = in_ns(net.host(), env!("CARGO_BIN_EXE_weir"))
        .args(["exec", "--config", host_path.to_str().unwrap(), "--workload", "cart", "--", "python3", "-c", CLIENT])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "workload: {said} {}\n{}", String::from_utf8_lossy(&out.stderr), logs());
    let (sent, received) = said.split_once('|').unwrap();
    assert_eq!(sent, received, "byte-exact through host plane, DPU and peer");
    on_host_link.stop();
    on_wire.stop();
    assert!(contains(&host_pcap, MARKER), "plaintext on the host↔DPU link, as designed");
    // The wire capture holds the connection's start (a TLS ClientHello record), where the
    // marker would be if anything leaked.
    let wire = std::fs::read(&wire_pcap).unwrap();
    let client_hello = |w: &[u8]| w[..3] == [0x16, 0x03, 0x01] && w[5] == 0x01;
    assert!(wire.windows(6).any(client_hello), "the wire capture saw the handshake");
    assert!(std::fs::metadata(&wire_pcap).unwrap().len() > 1 << 20, "the transfer crossed the wire");
    assert!(!contains(&wire_pcap, MARKER), "no plaintext on the wire");

    let (_, peer_metrics) = admin(net.peer(), 15900, "/metrics");
    assert!(peer_metrics.contains(&format!("peer=\"{}\"", id("cart"))), "the peer saw the workload's SPIFFE ID");

    // The DPU's wire retransmits arrive in the host plane's metrics, for this workload and service.
    let wire_labels = [&format!("workload=\"{}\"", id("cart"))[..], "service=\"echo\""];
    wait_for("wire retransmits on the host", Duration::from_secs(10), || {
        let (_, dpu_metrics) = admin(net.dpu(), 15900, "/metrics");
        let on_dpu = metric(&dpu_metrics, "weir_tcp_retransmits_total", &["direction=\"Outbound\""]);
        let (_, host_metrics) = admin(net.host(), 15900, "/metrics");
        let on_host = metric(&host_metrics, "weir_wire_tcp_retransmits_total", &wire_labels);
        if on_dpu > 0.0 && on_host == on_dpu {
            Ok(())
        } else {
            Err(format!("dpu {on_dpu}, host {on_host}"))
        }
    });

    // The host's access log joins the DPU's wire leg to its own record of the connection.
    wait_for("the wire leg in the host's access log", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(dir.path().join("host.log")).unwrap_or_default();
        let line = log.lines().find(|l| l.contains("wire leg, as the DPU reported it"));
        match line {
            Some(l) if l.contains(&format!("wire_peer=\"{}\"", id("peer"))) && l.contains("wire_retransmits=") => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    });

    // A host process outside the workload cgroups, without the key, gets nothing from the DPU.
    let intruder = "import socket\ns=socket.create_connection(('10.77.1.2',15010),timeout=10)\ns.sendall(b'GET / HTTP/1.1\\r\\nHost: echo\\r\\n\\r\\n'+b'x'*64)\ntry:\n  print(len(s.recv(100)))\nexcept ConnectionResetError:\n  print(0)\n";
    let out = in_ns(net.host(), "python3").args(["-c", intruder]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "refused: {}", String::from_utf8_lossy(&out.stderr));
    let (_, dpu_metrics) = admin(net.dpu(), 15900, "/metrics");
    assert_eq!(metric(&dpu_metrics, "weir_connections_refused_total", &["reason=\"host_preamble_malformed\""]), 1.0);

    ca_cut_from_the_dpu(&net, &host_path, &logs);
    dpu_killed_and_restarted(&net, (dpu, &dpu_cfg), (dir.path(), &host_path), &logs);
}

/// The DPU process killed (SIGKILL, no goodbye): the host's `/readyz` says the plane is down
/// and its workloads get nothing through; the DPU started again: both green, and a new transfer
/// through it is byte-exact.
fn dpu_killed_and_restarted(
    net: &Topology,
    (mut dpu, config): (Proc, &str),
    (dir, host_path): (&Path, &Path),
    logs: &dyn Fn() -> String,
) {
    let mut live = Live::start(net.host(), host_path);
    live.echo("before the kill").unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    dpu.0.kill().unwrap();
    dpu.0.wait().unwrap();
    wait_for("the host's /readyz red for the killed DPU", Duration::from_secs(10), || {
        match admin(net.host(), 15900, "/readyz") {
            (503, body) if body.contains("plane dpu: control connection down") => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        }
    });
    assert!(live.echo("after the kill").is_err(), "nothing passes while the DPU is gone");
    drop(live);

    let _dpu = weir_run(net.dpu(), dir, "dpu", config);
    for ns in [net.dpu(), net.host()] {
        wait_for(&format!("{ns} green after the DPU's restart"), Duration::from_secs(20), || {
            match admin(ns, 15900, "/readyz") {
                (200, _) => Ok(()),
                (code, body) => Err(format!("{code} {body}\n{}", logs())),
            }
        });
    }
    let out = in_ns(net.host(), env!("CARGO_BIN_EXE_weir"))
        .args(["exec", "--config", host_path.to_str().unwrap(), "--workload", "cart", "--", "python3", "-c", CLIENT])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(out.status.success(), "workload after the restart: {said}\n{}", logs());
    let (sent, received) = said.split_once('|').unwrap();
    assert_eq!(sent, received, "byte-exact through the restarted DPU");
}

/// The CA made unreachable from the DPU's namespace: the DPU's next rotation fails and the
/// host's `/readyz` says so, naming the plane and the CA; a connection opened before keeps
/// echoing; once the CA is back, both planes are green and new connections work.
fn ca_cut_from_the_dpu(net: &Topology, host_path: &Path, logs: &dyn Fn() -> String) {
    let mut live = Live::start(net.host(), host_path);
    live.echo("before the cut").unwrap_or_else(|e| panic!("{e}\n{}", logs()));

    net.cut_ca_from_dpu();
    let cut = Instant::now();
    // One rotation interval (half the lifetime) until the DPU's next attempt, the client's 3 s
    // connect timeout, one report interval (1 s), and a second of slack.
    let within = Duration::from_secs(SVID_TTL_SECS / 2 + 3 + 1 + 1);
    let mut reason = String::new();
    wait_for("the host's /readyz red for the DPU's failed rotation", within, || {
        match admin(net.host(), 15900, "/readyz") {
            (503, body) if body.contains("plane dpu") && body.contains(&format!("CA {CA_FROM_DPU}: connect")) => {
                reason = body;
                Ok(())
            }
            (code, body) => Err(format!("{code} {body}")),
        }
    });
    assert!(reason.contains("last SVID rotation failed"), "the reason: {reason}");
    eprintln!("red after {:?}: {}", cut.elapsed(), reason.trim());
    let (code, _) = admin(net.dpu(), 15900, "/readyz");
    assert_eq!(code, 503, "the DPU is red itself");
    live.echo("during the cut").unwrap_or_else(|e| panic!("an open connection survives the cut: {e}\n{}", logs()));

    net.restore_ca_to_dpu();
    let restored = Instant::now();
    // The DPU retries with backoff (1, 2, 4 s, each attempt up to 3 s).
    for ns in [net.dpu(), net.host()] {
        wait_for(&format!("{ns} green again"), Duration::from_secs(20), || match admin(ns, 15900, "/readyz") {
            (200, _) => Ok(()),
            (code, body) => Err(format!("{code} {body}")),
        });
    }
    eprintln!("green {:?} after the restore", restored.elapsed());
    live.echo("after the restore").unwrap_or_else(|e| panic!("{e}\n{}", logs()));
    // The DPU's SVIDs expired during the cut: a new connection proves it holds new ones.
    let mut fresh = Live::start(net.host(), host_path);
    fresh.echo("a new connection").unwrap_or_else(|e| panic!("{e}\n{}", logs()));
}
