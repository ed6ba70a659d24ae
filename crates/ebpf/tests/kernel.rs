//! The kernel path on this (host) kernel, as root: attach to a test cgroup, enforce, capture,
//! measure, survive the loader, detach. Fails with the reason where eBPF or cgroup v2 is
//! missing: it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use weir_ebpf::{Capture, KernelPath, Options, Plan, WorkloadPlan};
use weir_policy::{DenyRule, WorkloadL4};

/// Tests share bpffs and the cgroup tree: run them one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn opts(tag: &str) -> Options {
    let id = format!("weir-test-{tag}-{}", std::process::id());
    Options { cgroup: id.clone(), pin_dir: PathBuf::from("/sys/fs/bpf").join(id) }
}

/// Runs a bash TCP connect from inside `cgroup`; returns bash's output ("OK" or the error).
fn connect_from(cgroup: &Path, dst: SocketAddr) -> String {
    let host = match dst {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => a.ip().to_string(),
    };
    let script =
        format!("echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/{host}/{} && echo OK", cgroup.display(), dst.port());
    let out = Command::new("bash").arg("-c").arg(script).output().expect("bash");
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)).trim().to_owned()
}

fn workload(id: u32, name: &str, deny: &[&str], max: u32) -> WorkloadPlan {
    WorkloadPlan {
        id,
        name: name.into(),
        l4: WorkloadL4 { deny: deny.iter().map(|d| DenyRule::parse(d).expect("rule")).collect(), max_connections: max },
        count_http: false,
    }
}

#[test]
fn deny_rules_refuse_connect_and_update_at_runtime() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let a = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = TcpListener::bind("127.0.0.1:0").unwrap();
    let c6 = TcpListener::bind("[::1]:0").unwrap();
    let (a, b, c6) = (a.local_addr().unwrap(), b.local_addr().unwrap(), c6.local_addr().unwrap());
    let o = opts("deny");
    let mut k = KernelPath::start(&o).expect("attach the kernel path (root, cgroup v2, eBPF)");
    let rule_a = format!("127.0.0.1:{}", a.port());
    let rule_c = format!("[::1]:{}", c6.port());
    k.apply(&Plan { workloads: vec![workload(1, "w1", &[&rule_a, &rule_c], 0)], ..Default::default() }).expect("apply");
    let cg = k.workload_cgroup("w1");
    assert!(connect_from(&cg, a).contains("Operation not permitted"), "denied v4");
    assert_eq!(connect_from(&cg, b), "OK", "allowed v4");
    assert!(connect_from(&cg, c6).contains("Operation not permitted"), "denied v6");
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{}", a.port()).parse().unwrap();
    assert!(connect_from(&cg, mapped).contains("Operation not permitted"), "denied v4-mapped v6");
    let outside = connect_from(Path::new(&format!("{}/..", cg.display())), a);
    assert_eq!(outside, "OK", "the parent cgroup itself is no workload: untouched");

    // Runtime update: deny b instead of a, no re-attach.
    let rule_b = format!("127.0.0.1/32:{}", b.port());
    k.apply(&Plan { workloads: vec![workload(1, "w1", &[&rule_b], 0)], ..Default::default() }).expect("re-apply");
    assert_eq!(connect_from(&cg, a), "OK");
    assert!(connect_from(&cg, b).contains("Operation not permitted"));
    assert!(k.counters().expect("counters").denied >= 4);
    k.detach().expect("detach");
    assert!(!o.pin_dir.exists(), "pins removed");
}

#[test]
fn captured_connections_reach_the_capture_listener_with_their_original_destination() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let capture = TcpListener::bind("127.0.0.1:0").unwrap();
    let cap_addr = capture.local_addr().unwrap();
    let service: SocketAddr = "127.0.0.1:9".parse().unwrap(); // nothing listens there
    let o = opts("capture");
    let mut k = KernelPath::start(&o).expect("attach");
    k.apply(&Plan {
        workloads: vec![workload(5, "web", &[], 0)],
        services: vec![(service, 0)],
        capture: Some(Capture {
            v4: *match &cap_addr {
                SocketAddr::V4(a) => a.ip(),
                _ => unreachable!(),
            },
            v6: "::1".parse().unwrap(),
            port: cap_addr.port(),
        }),
    })
    .expect("apply");
    let cg = k.workload_cgroup("web");
    let client = std::thread::spawn(move || connect_from(&cg, service));
    let (conn, peer) = capture.accept().expect("captured connection arrives at the capture listener");
    assert_eq!(client.join().unwrap(), "OK", "the app saw a normal connect");
    let orig = k.original_destinations().expect("take the map");
    assert_eq!(orig.take(peer).expect("lookup"), Some((5, service)));
    assert_eq!(orig.take(peer).expect("lookup"), None, "consumed");
    drop(conn);
    let facts = k.connections().expect("conn stats");
    assert!(
        facts.iter().any(|f| f.local == peer && f.workload == 5),
        "sockops saw the workload's connection: {facts:?}"
    );
    assert_eq!(k.counters().unwrap().captured, 1);
    k.detach().expect("detach");
}

#[test]
fn connection_limit_refuses_the_next_connect_and_frees_slots_on_close() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = l.local_addr().unwrap();
    let o = opts("limit");
    let mut k = KernelPath::start(&o).expect("attach");
    k.apply(&Plan { workloads: vec![workload(2, "capped", &[], 2)], ..Default::default() }).expect("apply");
    let cg = k.workload_cgroup("capped");
    let hold = |secs: u32| {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/127.0.0.1/{} && echo OK && sleep {secs}",
            cg.display(),
            dst.port()
        );
        let mut child =
            Command::new("bash").arg("-c").arg(script).stdout(std::process::Stdio::piped()).spawn().expect("bash");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().expect("stdout")), &mut line)
            .expect("read");
        assert_eq!(line.trim(), "OK", "a connection within the limit");
        child
    };
    let mut first = hold(30);
    let mut second = hold(30);
    assert_eq!(k.open_connections(2).expect("count"), 2);
    assert!(connect_from(&cg, dst).contains("Operation not permitted"), "connection 3 of a limit of 2 is refused");
    first.kill().expect("kill");
    first.wait().expect("wait");
    for _ in 0..100 {
        if k.open_connections(2).expect("count") < 2 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(connect_from(&cg, dst), "OK", "a closed connection frees its slot");
    assert!(k.counters().expect("counters").limited >= 1);
    second.kill().expect("kill");
    second.wait().expect("wait");
    k.detach().expect("detach");
}

#[test]
fn policy_outlives_the_loader_and_a_restart_adopts_it() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let dst = l.local_addr().unwrap();
    let o = opts("restart");
    let rule = format!("127.0.0.1:{}", dst.port());
    let mut k = KernelPath::start(&o).expect("attach");
    assert!(!k.adopted());
    k.apply(&Plan { workloads: vec![workload(3, "w", &[&rule], 0)], ..Default::default() }).expect("apply");
    let cg = k.workload_cgroup("w");
    drop(k); // like a crash: nothing detached
    assert!(
        connect_from(&cg, dst).contains("Operation not permitted"),
        "pinned policy still enforced with no Weir running"
    );
    let mut k = KernelPath::start(&o).expect("restart");
    assert!(k.adopted(), "the restart adopts the pinned programs");
    assert!(connect_from(&cg, dst).contains("Operation not permitted"), "still enforced after adoption");
    k.apply(&Plan { workloads: vec![workload(3, "w", &[], 0)], ..Default::default() }).expect("apply");
    assert_eq!(connect_from(&cg, dst), "OK", "the adopted maps take updates");
    k.detach().expect("detach");
    assert!(!o.pin_dir.exists(), "no pins left");
    assert!(!cg.exists(), "no workload cgroup left");
}

/// A keep-alive HTTP/1.1 server answering every request head (and its Content-Length body).
fn http_server() -> SocketAddr {
    use std::io::{BufRead, Read, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut w = s.try_clone().unwrap();
                let mut r = std::io::BufReader::new(s);
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                            len = v.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0u8; len];
                    if r.read_exact(&mut body).is_err()
                        || w.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn kernel_counts_every_http_request_of_a_counting_workload() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let server = http_server();
    let o = opts("http");
    let mut k = KernelPath::start(&o).expect("attach");
    let mut w = workload(4, "counted", &[], 0);
    w.count_http = true;
    k.apply(&Plan { workloads: vec![w, workload(6, "uncounted", &[], 0)], ..Default::default() }).expect("apply");
    let run = |cg: &str, args: &str| {
        let script = format!(
            "echo $$ > {}/cgroup.procs && exec curl -s -o /dev/null -w '%{{http_code}}\\n' {args}",
            k.workload_cgroup(cg).display()
        );
        let out = Command::new("bash").arg("-c").arg(script).output().expect("curl");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| *l == "200").count()
    };
    // curl's URL range sends 1000 requests over one keep-alive connection.
    assert_eq!(run("counted", &format!("'http://{server}/[1-1000]'")), 1000, "curl got 1000 answers");
    assert_eq!(run("counted", &format!("-d hello 'http://{server}/[1-7]'")), 7);
    assert_eq!(run("uncounted", &format!("'http://{server}/[1-5]'")), 5);
    let mut counts = k.http_requests().expect("read counts");
    counts.sort();
    assert_eq!(
        counts,
        vec![(4, "GET", 1000), (4, "POST", 7)],
        "kernel counts equal the requests sent, only for the counting workload"
    );
    k.detach().expect("detach");
}
