//! Weir's HTTP/1.1 path between real peers: two `weir run` nodes (an outbound listener on the
//! client node, an inbound `protocol = "http"` service on the server node) in front of a real
//! nginx. Real clients (curl, wrk, raw pipelining) get byte-exact bodies both ways, and a
//! request-smuggling corpus never gets a hidden request past Weir to nginx.
//!
//! nginx (nginx-light), curl and wrk are required: `make setup` installs them
//! (scripts/setup.sh, which CI runs); a missing one fails the test, it never skips.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";
const TD: &str = "weir.local";
const CLIENT_ID: &str = "spiffe://weir.local/ns/default/sa/client";
const SERVER_ID: &str = "spiffe://weir.local/ns/default/sa/server";
/// The request every smuggling case tries to hide; the server node denies `/smuggled`, so it
/// can only reach nginx if Weir did not see it as a request.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";

fn missing(what: &str) -> ! {
    panic!("{what} is missing: `make setup` installs it (scripts/setup.sh, as CI does)")
}

/// The path of `name` on PATH, or a failure naming `make setup`.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        let package = if name == "h2load" { "nghttp2-client" } else { name };
        missing(&format!("`{name}` (Debian package {package})"))
    })
}

fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_file(path: &Path) -> String {
    sha256(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
}

/// Deterministic, incompressible-looking bytes (xorshift64).
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends SIGTERM, waits up to 5 s, then SIGKILL; always reaps.
fn stop(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    for _ in 0..50 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_listening(addr: SocketAddr, child: &mut Child, what: &str, log: &Path) {
    for _ in 0..200 {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited during start-up ({status}): {}", std::fs::read_to_string(log).unwrap_or_default());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} not listening on {addr} after 10 s: {}", std::fs::read_to_string(log).unwrap_or_default());
}

/// A real nginx as the backend, in its own directory, as the current user.
struct Nginx {
    child: Child,
    addr: SocketAddr,
    /// The same files over h2c (HTTP/2 with prior knowledge).
    h2: SocketAddr,
    root: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Nginx {
    /// Serves `files` (name, content) from its root; `/uploads/` accepts PUT (stored under the
    /// root), `/post` stores a POST body as `uploads/post.bin` (through a second, unlogged
    /// server with the same PUT handler), `/sink` answers 200 to any method.
    fn start(files: &[(&str, &[u8])]) -> Self {
        if !Path::new(NGINX).is_file() {
            missing(&format!("{NGINX} (Debian package nginx-light)"));
        }
        let v = Command::new(NGINX).arg("-V").output().unwrap_or_else(|e| panic!("{NGINX} -V: {e}"));
        if !String::from_utf8_lossy(&v.stderr).contains("--with-http_dav_module") {
            missing("nginx with the DAV module (Debian package nginx-light)");
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("uploads")).unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        for (name, content) in files {
            std::fs::write(root.join(name), content).unwrap();
        }
        let (addr, internal, h2) = (free_port(), free_port(), free_port());
        let id = |flag: &str| {
            let o = Command::new("id").arg(flag).output().expect("id");
            String::from_utf8_lossy(&o.stdout).trim().to_owned()
        };
        // As root, nginx would switch its worker to `nobody`, who cannot read the temp dir.
        let user = if id("-u") == "0" { format!("user {} {};", id("-un"), id("-gn")) } else { String::new() };
        let d = dir.path().display();
        let log = dir.path().join("access.log");
        let conf = format!(
            r#"{user}
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 1024; }}
http {{
    log_format weir '$request_method $request_uri $content_length $request_length $status "$http_traceparent" $http_host';
    access_log {log} weir;
    client_body_temp_path {d}/tmp/body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    keepalive_requests 10000;
    keepalive_timeout 65s;
    client_max_body_size 0;
    default_type application/octet-stream;
    sendfile on;
    server {{
        listen {addr};
        root {root};
        location /uploads/ {{ dav_methods PUT; create_full_put_path on; }}
        location = /post {{ proxy_method PUT; proxy_pass http://{internal}/uploads/post.bin; }}
        location /sink {{ return 200 "sink $request_method\n"; }}
    }}
    server {{
        listen {h2} http2;
        root {root};
    }}
    server {{
        listen {internal};
        access_log off;
        root {root};
        location /uploads/ {{ dav_methods PUT; create_full_put_path on; }}
    }}
}}
"#,
            log = log.display(),
            root = root.display(),
        );
        let conf_path = dir.path().join("nginx.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut child = Command::new(NGINX)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf_path)
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {NGINX}: {e}"));
        wait_listening(addr, &mut child, "nginx", &dir.path().join("error.log"));
        Self { child, addr, h2, root, log, dir }
    }

    /// nginx's access log so far, one request a line.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(str::to_owned).collect()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// A client node (outbound listener) and a server node (inbound `http` service in front of
/// `backend`), both `weir run` processes, with SVIDs from a CA made by `weir ca init`.
struct Mesh {
    children: Vec<(Child, PathBuf)>,
    outbound: SocketAddr,
    server_admin: SocketAddr,
    dir: tempfile::TempDir,
}

impl Mesh {
    fn start(backend: SocketAddr, mode: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        let o = Command::new(env!("CARGO_BIN_EXE_weir"))
            .args(["ca", "init", "--dir", ca.to_str().unwrap(), "--trust-domain", TD])
            .output()
            .expect("weir ca init");
        assert!(o.status.success(), "weir ca init: {}", String::from_utf8_lossy(&o.stderr));
        let (outbound, inbound, client_admin, server_admin) = (free_port(), free_port(), free_port(), free_port());
        let common = |name: &str, sa: &str, admin: SocketAddr, listen: SocketAddr| {
            format!(
                "trust_domain = \"{TD}\"\n[node]\nname = \"{name}\"\n[identity]\nnamespace = \"default\"\nservice_account = \"{sa}\"\n\
                 ca_dir = \"{}\"\ncreate_ca_if_missing = false\n[admin]\nlisten = \"{admin}\"\n[log]\nformat = \"text\"\nlevel = \"info\"\n\
                 [ktls]\nmode = \"auto\"\n[inbound]\nlisten = \"{listen}\"\n",
                ca.display()
            )
        };
        let server = common("server-node", "server", server_admin, inbound)
            + &format!(
                "[[inbound.services]]\nname = \"web\"\nbackend = \"{backend}\"\nallow = [\"{CLIENT_ID}\"]\nprotocol = \"http\"\n\
                 [inbound.services.http]\nmode = \"{mode}\"\nmax_head_bytes = 16384\n\
                 [[inbound.services.http.rules]]\naction = \"deny\"\npath_prefix = \"/smuggled\"\n"
            );
        let client = common("client-node", "client", client_admin, free_port())
            + &format!("[[outbound]]\nlisten = \"{outbound}\"\nservice = \"web\"\npeer = \"{inbound}\"\npeer_id = \"{SERVER_ID}\"\n");
        let mut mesh = Self { children: Vec::new(), outbound, server_admin, dir };
        for (name, text) in [("server", server), ("client", client)] {
            let cfg = mesh.dir.path().join(format!("{name}.toml"));
            std::fs::write(&cfg, text).unwrap();
            let log = mesh.dir.path().join(format!("{name}.log"));
            let child = Command::new(env!("CARGO_BIN_EXE_weir"))
                .args(["run", "--config"])
                .arg(&cfg)
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("weir run");
            mesh.children.push((child, log));
        }
        for admin in [server_admin, client_admin] {
            mesh.wait_ready(admin);
        }
        mesh
    }

    fn wait_ready(&mut self, admin: SocketAddr) {
        for _ in 0..300 {
            if matches!(http_get(admin, "/readyz"), Some((200, _))) {
                return;
            }
            self.assert_alive("start-up");
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("node with admin {admin} not ready after 30 s:\n{}", self.logs());
    }

    /// Fails if a node has exited (crashed).
    fn assert_alive(&mut self, when: &str) {
        let mut dead = Vec::new();
        for (child, log) in &mut self.children {
            if let Ok(Some(status)) = child.try_wait() {
                dead.push(format!("{} exited ({status})", log.display()));
            }
        }
        assert!(dead.is_empty(), "during {when}: {dead:?}\n{}", self.logs());
    }

    fn logs(&self) -> String {
        self.children
            .iter()
            .map(|(_, log)| format!("== {}\n{}", log.display(), std::fs::read_to_string(log).unwrap_or_default()))
            .collect()
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.outbound)
    }

    /// The server node's `weir_http_rejected_total`, by reason.
    fn rejected(&self) -> BTreeMap<String, f64> {
        let (status, text) = http_get(self.server_admin, "/metrics").expect("server /metrics");
        assert_eq!(status, 200);
        let mut out = BTreeMap::new();
        for line in text.lines().filter(|l| l.starts_with("weir_http_rejected_total{")) {
            let reason = line.split("reason=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("?").to_owned();
            let value: f64 = line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
            *out.entry(reason).or_insert(0.0) += value;
        }
        out
    }
}

impl Drop for Mesh {
    fn drop(&mut self) {
        for (child, _) in &mut self.children {
            stop(child);
        }
    }
}

/// A GET over HTTP/1.0 (no chunking, server closes): status and body.
fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: admin\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Some((status, body))
}

/// How a raw connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Eof,
    Reset,
    Timeout,
}

/// Writes `bytes` in one write, half-closes, reads until the end (at most `limit`).
fn raw_exchange(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Vec<u8>, End) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    s.write_all(bytes).unwrap();
    let _ = s.shutdown(Shutdown::Write);
    let (mut got, mut buf, deadline) = (Vec::new(), [0u8; 16384], Instant::now() + limit);
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (got, End::Eof),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if Instant::now() > deadline {
                    return (got, End::Timeout);
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return (got, End::Reset),
            Err(e) => panic!("read: {e}"),
        }
    }
}

/// One response read off a raw connection.
#[derive(Debug)]
struct Response {
    status: u16,
    /// It carries nginx's `Server` field (otherwise Weir answered itself).
    nginx: bool,
    body: Vec<u8>,
}

/// Splits a byte stream into responses (Content-Length framed; otherwise the rest is the body).
fn responses(mut b: &[u8]) -> Vec<Response> {
    let mut out = Vec::new();
    while let Some(end) = find(b, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&b[..end]).into_owned();
        let Some(status) = head.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else { break };
        let field = |name: &str| {
            head.lines().skip(1).find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let rest = &b[end + 4..];
        let len = match field("content-length").and_then(|v| v.parse::<usize>().ok()) {
            _ if (100..200).contains(&status) => 0,
            Some(n) => n.min(rest.len()),
            None => rest.len(),
        };
        let nginx = field("server").is_some_and(|s| s.starts_with("nginx"));
        out.push(Response { status, nginx, body: rest[..len].to_vec() });
        b = &rest[len..];
    }
    out
}

fn run(cmd: &mut Command) -> Output {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

/// Waits until nginx has logged `n` more lines than `before` (requests are logged when they
/// end) or 3 s have passed, then 100 ms more for any unexpected line; returns the new lines.
fn new_lines(nginx: &Nginx, before: usize, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(3);
    while nginx.lines().len() < before + n && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(100));
    let lines = nginx.lines();
    lines[before.min(lines.len())..].to_vec()
}

/// A logged `traceparent` of W3C form (version 00, 32-hex trace id, 16-hex span id, flags).
fn has_traceparent(line: &str) -> bool {
    let Some(tp) = line.split('"').nth(1) else { return false };
    let parts: Vec<&str> = tp.split('-').collect();
    parts.len() == 4
        && parts[0] == "00"
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[test]
fn real_clients_through_the_mesh_to_nginx() {
    let started = Instant::now();
    let (curl, wrk) = (tool("curl"), tool("wrk"));
    let big = pseudo_random(5 << 20, 1);
    let small = pseudo_random(1024, 2);
    let (p1, p2, p3) = (b"first response\n".to_vec(), b"second, longer response\n".to_vec(), b"third\n".to_vec());
    let nginx = Nginx::start(&[("big.bin", &big), ("1k", &small), ("p1", &p1), ("p2", &p2), ("p3", &p3)]);
    let mut mesh = Mesh::start(nginx.addr, "splice");
    let work = tempfile::tempdir().unwrap();

    // Download: 5 MiB, byte-exact.
    let out = work.path().join("big.out");
    run(Command::new(&curl).args(["-sS", "--fail", "--max-time", "30", "-o"]).arg(&out).arg(mesh.url("/big.bin")));
    assert_eq!(sha256_file(&out), sha256(&big), "5 MiB download through the mesh is byte-exact");

    // Uploads: 3 MiB with Content-Length, chunked, and POST with Expect: 100-continue.
    let upload = pseudo_random(3 << 20, 3);
    let src = work.path().join("upload.bin");
    std::fs::write(&src, &upload).unwrap();
    let status = |o: &Output| String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let put_cl = run(Command::new(&curl)
        .args(["-sS", "--fail", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}", "-T"])
        .arg(&src)
        .arg(mesh.url("/uploads/put-cl.bin")));
    assert_eq!(status(&put_cl), "201", "PUT with Content-Length stored");
    assert_eq!(sha256_file(&nginx.root.join("uploads/put-cl.bin")), sha256(&upload), "nginx stored the exact body");

    let put_chunked = run(Command::new(&curl)
        .args(["-sS", "-v", "--fail", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Transfer-Encoding: chunked", "-T"])
        .arg(&src)
        .arg(mesh.url("/uploads/put-chunked.bin")));
    assert!(
        String::from_utf8_lossy(&put_chunked.stderr).contains("> Transfer-Encoding: chunked"),
        "curl sent the body chunked"
    );
    assert_eq!(status(&put_chunked), "201", "chunked PUT stored");
    assert_eq!(
        sha256_file(&nginx.root.join("uploads/put-chunked.bin")),
        sha256(&upload),
        "nginx de-chunked exactly the body curl sent"
    );

    let post = run(Command::new(&curl)
        .args(["-sS", "-v", "--fail", "--max-time", "30", "-o", "/dev/null", "-w", "%{http_code}"])
        .args(["-H", "Expect: 100-continue", "--data-binary"])
        .arg(format!("@{}", src.display()))
        .arg(mesh.url("/post")));
    let verbose = String::from_utf8_lossy(&post.stderr);
    assert!(verbose.contains("> Expect: 100-continue"), "curl asked for 100-continue:\n{verbose}");
    assert!(verbose.contains("< HTTP/1.1 100 Continue"), "nginx's 100 Continue came through Weir:\n{verbose}");
    assert_eq!(status(&post), "201", "POST stored (through nginx's proxy to its PUT handler)");
    assert_eq!(sha256_file(&nginx.root.join("uploads/post.bin")), sha256(&upload), "POST body byte-exact");

    let lines = new_lines(&nginx, 0, 4);
    let len = upload.len();
    // nginx logs $content_length after reading the body, so a chunked body shows its
    // de-chunked size too; its chunk framing makes that request longer on the wire.
    let expect = [("GET /big.bin ", None, " 200 "), ("PUT /uploads/put-cl.bin ", Some(len), " 201 ")];
    let expect = expect
        .into_iter()
        .chain([("PUT /uploads/put-chunked.bin ", Some(len), " 201 "), ("POST /post ", Some(len), " 201 ")]);
    assert_eq!(lines.len(), 4, "one nginx request per curl request: {lines:#?}");
    let mut request_lengths = Vec::new();
    for (line, (start, cl, st)) in lines.iter().zip(expect) {
        let cl = cl.map_or("-".to_owned(), |n| n.to_string());
        assert!(line.starts_with(start) && line.split(' ').nth(2) == Some(cl.as_str()) && line.contains(st), "{line}");
        assert!(has_traceparent(line), "Weir added a traceparent: {line}");
        let request_length: usize = line.split(' ').nth(3).unwrap().parse().unwrap();
        request_lengths.push(request_length);
        if !start.starts_with("GET") {
            assert!(request_length > len, "nginx read the whole request ({request_length} bytes): {line}");
        }
    }
    assert!(request_lengths[2] > request_lengths[1], "the chunked PUT reached nginx chunked: {lines:#?}");

    // wrk: 4 keep-alive connections for 2 s, no errors, every completed request seen by nginx.
    let before = nginx.lines().len();
    let o = run(Command::new(&wrk).args(["-t1", "-c4", "-d2s"]).arg(mesh.url("/1k")));
    let report = String::from_utf8_lossy(&o.stdout).into_owned();
    let requests: usize = report
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no request count in wrk's report:\n{report}"));
    assert!(requests > 100, "wrk got through the mesh:\n{report}");
    if let Some(errors) = report.lines().find(|l| l.contains("Socket errors:")) {
        let counts: Vec<u64> =
            errors.split([',', ':']).filter_map(|p| p.split_whitespace().last().and_then(|n| n.parse().ok())).collect();
        assert!(counts.iter().all(|c| *c == 0), "wrk socket errors:\n{report}");
    }
    assert!(!report.contains("Non-2xx or 3xx responses"), "wrk saw non-2xx responses:\n{report}");
    std::thread::sleep(Duration::from_millis(300));
    let logged = new_lines(&nginx, before, requests);
    let ok_1k = logged.iter().filter(|l| l.starts_with("GET /1k ") && l.contains(" 200 ")).count();
    assert_eq!(ok_1k, logged.len(), "only /1k requests, all 200: {:?}", logged.iter().find(|l| !l.contains(" 200 ")));
    assert!(
        (requests..=requests + 4).contains(&ok_1k),
        "nginx logged {ok_1k} requests, wrk completed {requests} (at most 4 more may have been in flight):\n{report}"
    );

    // Pipelining: three requests in one write come back as three responses, in order.
    let before = nginx.lines().len();
    let pipelined = "GET /p1 HTTP/1.1\r\nHost: x\r\n\r\nGET /p2 HTTP/1.1\r\nHost: x\r\n\r\nGET /p3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (got, end) = raw_exchange(mesh.outbound, pipelined.as_bytes(), Duration::from_secs(10));
    assert_eq!(end, End::Eof, "Connection: close on the last request ends the connection");
    let rs = responses(&got);
    assert_eq!(rs.len(), 3, "{}", String::from_utf8_lossy(&got));
    for (r, want) in rs.iter().zip([&p1, &p2, &p3]) {
        assert!(r.status == 200 && r.nginx && r.body == **want, "{r:?}");
    }
    let logged = new_lines(&nginx, before, 3);
    let paths: Vec<&str> = logged.iter().filter_map(|l| l.split(' ').nth(1)).collect();
    assert_eq!(paths, ["/p1", "/p2", "/p3"], "nginx got the three requests in order");

    mesh.assert_alive("real clients");
    assert!(!nginx.error_log().contains("[emerg]"), "{}", nginx.error_log());
    println!("real clients: wrk {requests} requests; whole test {:?}", started.elapsed());
}

/// What a smuggling case must come to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Refused at the head: Weir answers 400/431/501/505 itself and closes; nginx sees nothing.
    Refused,
    /// The intended request reaches nginx exactly once (Weir and nginx frame it alike).
    Intended,
    /// Either of the above.
    Harmless,
    /// A malformed chunked body: the head (valid) is already at nginx when Weir walks the
    /// body, so nginx may see the intended request's head; Weir must answer 400 itself (a
    /// client error, counted as `bad_chunk`), close, and send nothing after the bad line.
    RefusedInBody,
    /// Weir's L7 policy answers 403 (the target names the denied path).
    Denied,
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    want: Want,
}

/// `POST /sink?case=<name>` with `fields` (each with its own line end) and then `body`.
fn post(name: &'static str, fields: &str, body: &[u8], want: Want) -> Case {
    let mut bytes = format!("POST /sink?case={name} HTTP/1.1\r\nHost: x\r\n{fields}\r\n").into_bytes();
    bytes.extend_from_slice(body);
    Case { name, bytes, want }
}

fn corpus() -> Vec<Case> {
    let s = SMUGGLED.len();
    // A chunked body that carries the smuggled request as chunk data: a backend that frames
    // by `Content-Length: 4` instead reads only the size line and then the smuggled request.
    let chunk_hiding = format!("{s:x}\r\n{SMUGGLED}\r\n0\r\n\r\n");
    let te_cl =
        |name, te: &str| post(name, &format!("{te}Content-Length: 4\r\n"), chunk_hiding.as_bytes(), Want::Refused);
    let after = |prefix: &str| format!("{prefix}{SMUGGLED}").into_bytes();
    let mut cases = vec![
        // CL.TE: by Content-Length the smuggled request is body, by chunked it follows the body.
        post(
            "cl_te",
            &format!("Content-Length: {}\r\nTransfer-Encoding: chunked\r\n", 5 + s),
            &after("0\r\n\r\n"),
            Want::Refused,
        ),
        te_cl("te_cl", "Transfer-Encoding: chunked\r\n"),
        te_cl("te_te_xchunked", "Transfer-Encoding: xchunked\r\n"),
        te_cl("te_te_space_before_colon", "Transfer-Encoding : chunked\r\n"),
        te_cl("te_te_second_value", "Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n"),
        te_cl("te_te_tab_before_value", "Transfer-Encoding:\tchunked\r\n"),
        te_cl("te_te_obs_fold_crlf", "Transfer-Encoding:\r\n chunked\r\n"),
        te_cl("te_te_obs_fold_lf", "Transfer-Encoding:\n chunked\r\n"),
        // Which Content-Length wins decides whether the smuggled request is body.
        post(
            "cl_duplicate_differing",
            &format!("Content-Length: 0\r\nContent-Length: {s}\r\n"),
            SMUGGLED.as_bytes(),
            Want::Refused,
        ),
        post("cl_plus_sign", &format!("Content-Length: +{s}\r\n"), SMUGGLED.as_bytes(), Want::Refused),
        post("cl_list_space_comma", &format!("Content-Length: {s} ,0\r\n"), SMUGGLED.as_bytes(), Want::Refused),
        post("cl_hex", &format!("Content-Length: 0x{s:x}\r\n"), SMUGGLED.as_bytes(), Want::Refused),
        // Chunk sizes that wrap or truncate to 0 in a lax parser end the body early.
        post(
            "chunk_size_overflow_ff",
            "Transfer-Encoding: chunked\r\n",
            &after("ffffffffffffffffff\r\n"),
            Want::RefusedInBody,
        ),
        post(
            "chunk_size_overflow_wraps_to_0",
            "Transfer-Encoding: chunked\r\n",
            &after("10000000000000000\r\n\r\n"),
            Want::RefusedInBody,
        ),
        post("chunk_size_invalid_chars", "Transfer-Encoding: chunked\r\n", &after("0x0\r\n\r\n"), Want::RefusedInBody),
        post(
            "chunk_extension_very_long",
            "Transfer-Encoding: chunked\r\n",
            &after(&format!("0;{}\r\n\r\n", "e".repeat(8192))),
            Want::RefusedInBody,
        ),
        // Framing fields in the trailer section: after the body, too late to frame it.
        post(
            "trailer_content_length",
            "Transfer-Encoding: chunked\r\n",
            &after(&format!("0\r\nContent-Length: {s}\r\n\r\n")),
            Want::Harmless,
        ),
        post(
            "trailer_transfer_encoding",
            "Transfer-Encoding: chunked\r\n",
            &after("0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Want::Harmless,
        ),
        // Field injection: a line break inside a value that only some parsers honour.
        post("bare_cr_in_value", &format!("X-Note: a\rContent-Length: {s}\r\n"), SMUGGLED.as_bytes(), Want::Refused),
        post("bare_lf_in_value", &format!("X-Note: a\nContent-Length: {s}\r\n"), SMUGGLED.as_bytes(), Want::Harmless),
        post("nul_in_value", &format!("X-Note: a\0\r\nContent-Length: {s}\r\n"), SMUGGLED.as_bytes(), Want::Refused),
        post(
            "oversized_head",
            &format!("X-Pad: {}\r\nContent-Length: {s}\r\n", "p".repeat(20_000)),
            SMUGGLED.as_bytes(),
            Want::Refused,
        ),
    ];
    let raw = |name, text: String, want| Case { name, bytes: text.into_bytes(), want };
    cases.extend([
        raw(
            "request_line_bare_lf",
            format!("POST /sink?case=request_line_bare_lf HTTP/1.1\nHost: x\r\nContent-Length: {s}\r\n\r\n{SMUGGLED}"),
            Want::Harmless,
        ),
        raw("http09_request_line", format!("GET /sink?case=http09_request_line\r\n{SMUGGLED}"), Want::Refused),
        raw(
            "absolute_form_other_host",
            format!(
                "GET http://elsewhere.example/sink?case=absolute_form_other_host HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"
            ),
            Want::Intended,
        ),
        raw(
            "absolute_form_denied_path",
            format!("GET http://x/smuggled?case=absolute_form_denied_path HTTP/1.1\r\nHost: x\r\n\r\n{SMUGGLED}"),
            Want::Denied,
        ),
    ]);
    cases
}

#[test]
fn smuggling_corpus_never_reaches_nginx_hidden() {
    let started = Instant::now();
    let nginx = Nginx::start(&[]);
    let mut mesh = Mesh::start(nginx.addr, "splice");
    let mut table = vec![format!("{:<32} {:<40} {:<10} {}", "case", "weir answer, end", "nginx", "rejected_total")];
    let mut failures = Vec::new();
    let smuggled_len = SMUGGLED.len().to_string();
    for case in corpus() {
        let (before_lines, before_rejected) = (nginx.lines().len(), mesh.rejected());
        let (got, end) = raw_exchange(mesh.outbound, &case.bytes, Duration::from_secs(5));
        let rs = responses(&got);
        // Intended requests are logged when they end; give nginx a moment either way.
        let expected_lines = usize::from(rs.iter().any(|r| r.nginx));
        let lines = new_lines(&nginx, before_lines, expected_lines);
        let rejected = mesh.rejected();
        let rose: Vec<String> = rejected
            .iter()
            .filter(|(k, v)| **v > before_rejected.get(*k).copied().unwrap_or(0.0))
            .map(|(k, v)| format!("{k} +{}", v - before_rejected.get(k).copied().unwrap_or(0.0)))
            .collect();
        let first = rs.first();
        let weir_refused = first.is_some_and(|r| !r.nginx && [400, 431, 501, 505].contains(&r.status));
        let intended = format!("/sink?case={}", case.name);
        let intended_lines = lines.iter().filter(|l| l.contains(&intended)).count();
        let answer = match first {
            Some(r) if r.nginx => {
                let rest: Vec<String> =
                    rs[1..].iter().map(|r| format!("{}{}", r.status, if r.nginx { "" } else { "(weir)" })).collect();
                format!("forwarded ({}), then {rest:?}", r.status)
            }
            Some(r) => format!("{} (weir) x{}", r.status, rs.len()),
            None => "no response".to_owned(),
        };
        let statuses: Vec<&str> = lines.iter().filter_map(|l| l.split(' ').nth(4)).collect();
        table.push(format!(
            "{:<32} {:<40} {:<10} {}",
            case.name,
            format!("{answer} {end:?}"),
            format!("{} {statuses:?}", lines.len()),
            rose.join(", ")
        ));

        let mut fail =
            |why: String| failures.push(format!("{}: {why}\n  weir: {answer} {end:?}\n  nginx: {lines:?}", case.name));
        if lines.iter().any(|l| l.contains("/smuggled")) {
            fail("the hidden request reached nginx".into());
        }
        if end == End::Timeout {
            fail("the connection hung (no end within 5 s)".into());
        }
        if lines.iter().any(|l| !l.contains(&intended)) {
            fail("nginx saw a request the client did not intend".into());
        }
        let refused_ok = weir_refused && rs.len() == 1 && lines.is_empty() && end != End::Timeout;
        let intended_ok = intended_lines == 1 && lines.len() == 1;
        if weir_refused && !(rose.len() == 1 && rose[0].ends_with(" +1")) {
            fail(format!("refused, but weir_http_rejected_total rose by {rose:?}"));
        }
        // Forwarded: the smuggled bytes were either the intended request's body at nginx too
        // (same Content-Length) or a request of their own, which Weir's policy denied.
        if first.is_some_and(|r| r.nginx) {
            let as_body = rs.len() == 1 && lines.len() == 1 && lines[0].split(' ').nth(2) == Some(&smuggled_len);
            let denied = rs.len() == 2 && rs[1].status == 403 && !rs[1].nginx;
            if !(as_body || denied) {
                fail("the smuggled bytes were neither body at nginx nor a request Weir denied".into());
            }
        }
        // The universal rule: refused by Weir and closed, or nginx saw just the intended request.
        if case.want != Want::Denied && !(refused_ok || intended_lines <= 1 && lines.len() == intended_lines) {
            fail("neither refused by Weir nor harmless at nginx".into());
        }
        let weir_400_bad_chunk = first.is_some_and(|r| !r.nginx && r.status == 400)
            && rs.len() == 1
            && end != End::Timeout
            && lines.len() <= 1
            && rose == ["bad_chunk +1"];
        match case.want {
            Want::RefusedInBody if !weir_400_bad_chunk => fail(
                "a malformed chunk is the client's error: Weir must answer 400 itself and count it as \
                 bad_chunk in weir_http_rejected_total"
                    .into(),
            ),
            Want::Refused if !refused_ok => {
                fail("must be refused at the head (400/431/505 from Weir, then close)".into())
            }
            Want::Intended if !intended_ok => fail("nginx must see exactly the intended request".into()),
            Want::Harmless if !(refused_ok || intended_ok) => {
                fail("neither refused by Weir nor exactly the intended request at nginx".into())
            }
            Want::Denied if !(first.is_some_and(|r| r.status == 403 && !r.nginx) && lines.is_empty()) => {
                fail("must be denied by Weir's policy (403) with nothing at nginx".into())
            }
            _ => {}
        }
        if case.name == "absolute_form_other_host" && !lines.iter().all(|l| l.ends_with(" elsewhere.example")) {
            fail("absolute-form goes upstream with its authority as Host".into());
        }
        mesh.assert_alive(case.name);
    }
    println!("{}", table.join("\n"));
    let all = nginx.lines();
    assert!(!all.iter().any(|l| l.contains("/smuggled")), "nginx's log never names /smuggled:\n{all:#?}");
    assert!(matches!(http_get(mesh.server_admin, "/readyz"), Some((200, _))), "server node still ready");
    println!("smuggling corpus: {:?}", started.elapsed());
    assert!(failures.is_empty(), "{} case(s) failed:\n{}\n{}", failures.len(), failures.join("\n"), table.join("\n"));
}

/// h2load (HTTP/2, multiplexed) through two nodes to nginx over h2c: every request succeeds, and
/// nginx logged each one.
#[test]
fn h2load_through_the_mesh_to_nginx() {
    let h2load = tool("h2load");
    let small = pseudo_random(1024, 7);
    let nginx = Nginx::start(&[("1k", &small)]);
    let mut mesh = Mesh::start(nginx.h2, "splice");
    let before = nginx.lines().len();
    let out = run(Command::new(&h2load).args(["-n", "2000", "-c", "4", "-m", "10"]).arg(mesh.url("/1k")));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = text.lines().find(|l| l.starts_with("requests:")).unwrap_or_else(|| panic!("h2load output:\n{text}"));
    assert!(line.contains("2000 total") && line.contains("2000 succeeded") && line.contains("0 failed"), "{line}");
    assert!(text.contains("status codes: 2000 2xx"), "{text}");
    assert_eq!(nginx.lines().len() - before, 2000, "nginx saw every request once");
    mesh.assert_alive("after h2load");
    let metrics = http_get(mesh.server_admin, "/metrics").map(|(_, m)| m).unwrap_or_default();
    assert!(metrics.contains("mode=\"copy\""), "HTTP/2 is labelled copy mode:\n{metrics}");
}
