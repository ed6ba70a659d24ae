//! The DPU and host roles, in process.
//!
//! The DPU's host channel: a host-plane client that holds the planes' key reaches a peer
//! node's service as its workload (the peer admits only that workload, not the DPU),
//! byte-exact; a process without the key, a replayed preamble, an unregistered workload and
//! plain bytes are refused, counted by reason, and never reach the service; a control
//! connection from an identity other than the host plane's hears nothing.
//!
//! The two planes (root: the host plane runs the eBPF kernel path): a process in the host's
//! workload cgroup reaches the service through host plane -> DPU -> mTLS -> peer; the host's
//! `/readyz` follows the DPU's certificate state (a failed rotation on the DPU alone, then its
//! repair) and the DPU process (killed, restarted), while open connections survive; the DPU's
//! follows the host plane's (its failed rotation, then its repair). L7 placed on
//! the host plane runs there (routing, request records, trace context) and not on the DPU; L7
//! configured on both planes turns both red, naming the service. A DPU service on the host is
//! reached through the host plane, which knows the caller and runs the service's L7 policy; the
//! channel key rotates over the control connection without refusing either direction.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::dpu::{dpu, dpu_with, echoes, free_addr, held_open, key_file, sealed, through, KEY};
use common::{id, metric, node_config, Mesh, Opts};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_app::Node;
use weir_identity::Validity;
use weir_tls::preamble::Status;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_workload_reaches_the_mesh_as_itself_and_nothing_else_does() {
    let mut opts = Opts::new("off");
    // The service admits the workload only: the DPU's own identity would be refused.
    opts.allow = vec![id("cart")];
    let mesh = Mesh::start(opts).await;
    let dpu = dpu(&mesh, &mesh.dir.path().join("ca"), &Opts::new("off"), (free_addr(), free_addr())).await;

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

    // The control connection carries the channel key: a peer of the trust domain that is not
    // the configured host plane is refused before the DPU says anything.
    let valid = Validity::starting_now(Duration::from_secs(600));
    let impostor = mesh.client_tls_to(&mesh.ca, "cart", valid, &id("dpu"));
    let tcp = TcpStream::connect(dpu.control).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("weir.mesh").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(impostor)
        .connect(name, tcp)
        .await
        .expect("TLS 1.3: the client side completes");
    let mut heard = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut heard)).await.expect("closed");
    assert!(heard.is_empty(), "the DPU sent {} bytes to a peer that is not its host plane ({read:?})", heard.len());
    assert_eq!(refused("peer_id_mismatch"), 1.0);
    let (status, body) = readyz(dpu.node.admin_addr()).await;
    assert_eq!(status, 503, "no host plane ever connected: {body}");
    assert!(body.contains("plane host: control connection down"), "{body}");
}

/// `/readyz` of a node's admin endpoint: status and body.
async fn readyz(admin: SocketAddr) -> (u16, String) {
    let mut s = TcpStream::connect(admin).await.unwrap();
    s.write_all(b"GET /readyz HTTP/1.0\r\n\r\n").await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, out.split("\r\n\r\n").nth(1).unwrap_or("").trim().to_owned())
}

/// Polls `/readyz` until `want(status, body)` holds; panics with the last answer after `within`.
async fn wait_readyz(admin: SocketAddr, within: Duration, what: &str, want: impl Fn(u16, &str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, body) = readyz(admin).await;
        if want(status, &body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: still {status} {body:?} after {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A process in the workload cgroup `cgroup` sends `text` to the captured echo address and
/// prints what comes back.
fn workload_echo(cgroup: &Path, text: &str) -> String {
    workload_echo_to(cgroup, "127.0.0.77", text)
}

/// [`workload_echo`] to port 7 of `ip`.
fn workload_echo_to(cgroup: &Path, ip: &str, text: &str) -> String {
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec 3<>/dev/tcp/{ip}/7 && printf '{text}' >&3 && head -c {} <&3",
        cgroup.display(),
        text.len()
    );
    let out = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "workload: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A process in the workload cgroup `cgroup` asks `url` with curl; prints the response head and
/// body.
fn workload_curl(cgroup: &Path, url: &str) -> String {
    let script = format!("echo $$ > {}/cgroup.procs && exec curl -sS --max-time 10 -D - {url}", cgroup.display());
    let out = std::process::Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "workload curl: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// An HTTP/1.1 backend answering `path traceparent=<the request's traceparent>`.
async fn http_backend() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let trace = req.headers().get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or("none");
                    let body = format!("{} traceparent={trace}", req.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(
                        bytes::Bytes::from(body),
                    )))
                });
                let io = hyper_util::rt::TokioIo::new(s);
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    addr
}

/// A host plane for workload `cart` in cgroup `tag`/cart, with `routes` as its `[[outbound]]`.
async fn host_plane(mesh: &Mesh, tag: &str, dpu_node: &common::dpu::Dpu, routes: &str) -> Node {
    host_plane_with(mesh, tag, dpu_node, routes, (&mesh.dir.path().join("ca"), &Opts::new("off"))).await
}

/// [`host_plane`], its SVIDs from the CA in `ca_dir`, its identity section from `opts`.
async fn host_plane_with(
    mesh: &Mesh,
    tag: &str,
    dpu_node: &common::dpu::Dpu,
    routes: &str,
    (ca_dir, opts): (&Path, &Opts),
) -> Node {
    let host_cfg = format!(
        "role = \"host\"\n{}[kernel]\nmode = \"ebpf\"\ncgroup = \"{tag}\"\npin_dir = \"/sys/fs/bpf/{tag}\"\ncapture_listen = \"{}\"\n\
         [[workloads]]\nname = \"cart\"\nservice_account = \"cart\"\n{routes}\
         [dpu]\nhost_channel = \"{}\"\nkey_file = \"{}\"\n[dpu.control]\naddr = \"{}\"\npeer_id = \"{}\"\ninterval_secs = 1\n",
        node_config(ca_dir, "host", opts),
        free_addr(),
        dpu_node.channel,
        key_file(mesh.dir.path()).display(),
        dpu_node.control,
        id("dpu"),
    );
    Node::start(weir_config::parse(&host_cfg, "host.toml").expect("host config")).await.expect("host plane")
}

/// `weir_http_requests_total` of status class `class` (`2xx`, …) in a metrics text.
fn http_requests(text: &str, class: &str) -> f64 {
    metric(text, "weir_http_requests_total", &[&format!("status_class=\"{class}\"")])
}

/// `GET path` on a fresh connection to `to`; the whole response.
async fn get(to: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(to).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: echo\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

/// Removes pins and cgroups if the test fails before the host plane's clean stop.
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_plane_reaches_the_mesh_through_its_dpu_and_shares_its_health() {
    let mut opts = Opts::new("off");
    opts.allow = vec![id("cart")];
    let mesh = Mesh::start(opts).await;
    // Each plane its own view of the CA, so that one alone can lose it; SVIDs of 4 s rotate
    // every 2 s.
    let ca = mesh.dir.path().join("ca");
    let copy_of_ca = |name: &str| {
        let copy = mesh.dir.path().join(name);
        std::fs::create_dir(&copy).unwrap();
        for f in std::fs::read_dir(&ca).unwrap() {
            let f = f.unwrap().path();
            std::fs::copy(&f, copy.join(f.file_name().unwrap())).unwrap();
        }
        copy
    };
    let (dpu_ca, host_ca) = (copy_of_ca("dpu-ca"), copy_of_ca("host-ca"));
    let mut short_svids = Opts::new("off");
    short_svids.svid_ttl_secs = 4;
    let addrs = (free_addr(), free_addr());
    let mut dpu_node = dpu(&mesh, &dpu_ca, &short_svids, addrs).await;

    let tag = format!("weir-planes-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    let route = "[[outbound]]\nservice = \"echo\"\ncapture = [\"127.0.0.77:7\"]\n";
    let host = host_plane_with(&mesh, &tag, &dpu_node, route, (&host_ca, &short_svids)).await;
    let ready = |s: u16, _: &str| s == 200;
    wait_readyz(host.admin_addr(), Duration::from_secs(10), "host plane", ready).await;
    wait_readyz(dpu_node.node.admin_addr(), Duration::from_secs(10), "dpu", ready).await;
    assert_eq!(metric(&host.metrics_text(), "weir_plane_ready", &["plane=\"dpu\""]), 1.0);
    assert_eq!(metric(&dpu_node.node.metrics_text(), "weir_plane_ready", &["plane=\"host\""]), 1.0);

    // A process in the workload's cgroup: captured, sent to the DPU, carried as `cart`.
    let cgroup = weir_ebpf::cgroup::v2_root().unwrap().join(&tag).join("cart");
    assert_eq!(workload_echo(&cgroup, "through the dpu"), "through the dpu");
    let host_metrics = host.metrics_text();
    assert_eq!(metric(&host_metrics, "weir_connections_opened_total", &["mode=\"host_channel\""]), 1.0);
    assert!(mesh.server.metrics_text().contains(&format!("peer=\"{}\"", id("cart"))), "the peer saw the workload");

    // The DPU loses its CA: its rotation fails, and the host says so, naming the plane.
    let mut open = held_open(dpu_node.channel).await;
    let bundle = dpu_ca.join("bundle.pem");
    std::fs::rename(&bundle, dpu_ca.join("bundle.pem.away")).unwrap();
    let body = wait_readyz(host.admin_addr(), Duration::from_secs(10), "rotation failure on the dpu", |s, b| {
        s == 503 && b.contains("plane dpu") && b.contains("rotation failed")
    })
    .await;
    assert!(body.contains("bundle.pem"), "the reason names what failed: {body}");
    assert_eq!(metric(&host.metrics_text(), "weir_plane_ready", &["plane=\"dpu\""]), 0.0);
    std::fs::rename(dpu_ca.join("bundle.pem.away"), &bundle).unwrap();
    wait_readyz(host.admin_addr(), Duration::from_secs(20), "the dpu's CA restored", ready).await;
    assert!(echoes(&mut open, b"still open after the failed rotation").await, "open connections survive");

    // The DPU process goes away: the host says the plane is down; back, and service returns.
    drop(open);
    dpu_node.node.shutdown(Duration::from_millis(100)).await;
    let body = wait_readyz(host.admin_addr(), Duration::from_secs(10), "dpu stopped", |s, _| s == 503).await;
    assert!(body.contains("plane dpu: control connection down"), "{body}");
    dpu_node = dpu(&mesh, &dpu_ca, &short_svids, addrs).await;
    wait_readyz(host.admin_addr(), Duration::from_secs(10), "dpu restarted", ready).await;
    assert_eq!(workload_echo(&cgroup, "after the restart"), "after the restart");

    // The other way round: the host plane loses its CA, and the DPU says so, naming the plane.
    let bundle = host_ca.join("bundle.pem");
    std::fs::rename(&bundle, host_ca.join("bundle.pem.away")).unwrap();
    let dpu_admin = dpu_node.node.admin_addr();
    let body = wait_readyz(dpu_admin, Duration::from_secs(10), "rotation failure on the host", |s, b| {
        s == 503 && b.contains("plane host") && b.contains("rotation failed")
    })
    .await;
    assert!(body.contains("bundle.pem"), "the reason names what failed: {body}");
    assert_eq!(metric(&dpu_node.node.metrics_text(), "weir_plane_ready", &["plane=\"host\""]), 0.0);
    std::fs::rename(host_ca.join("bundle.pem.away"), &bundle).unwrap();
    wait_readyz(dpu_admin, Duration::from_secs(20), "the host's CA restored", ready).await;
    assert_eq!(metric(&dpu_node.node.metrics_text(), "weir_plane_ready", &["plane=\"host\""]), 1.0);

    host.shutdown(Duration::from_millis(100)).await;
    dpu_node.node.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn l7_runs_once_in_the_plane_its_config_places_it() {
    let mut opts = Opts::new("off");
    opts.allow = vec![id("cart")];
    opts.backend = Some(http_backend().await);
    let mesh = Mesh::start(opts).await;
    let ca = mesh.dir.path().join("ca");
    let addrs = (free_addr(), free_addr());
    let mut dpu_node = dpu(&mesh, &ca, &Opts::new("off"), addrs).await;
    let tag = format!("weir-l7-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    // L7 placed on the host: `/v2` goes to service echo; the DPU carries it as L4.
    let routes = "[[outbound]]\nservice = \"web\"\ncapture = [\"127.0.0.78:80\"]\nprotocol = \"http\"\n\
                  [[outbound.http.routes]]\npath_prefix = \"/v2\"\nsplit = [{ service = \"echo\" }]\n\
                  [[outbound]]\nservice = \"echo\"\n";
    let host = host_plane(&mesh, &tag, &dpu_node, routes).await;
    let ready = |s: u16, _: &str| s == 200;
    wait_readyz(host.admin_addr(), Duration::from_secs(10), "host plane", ready).await;
    wait_readyz(dpu_node.node.admin_addr(), Duration::from_secs(10), "dpu", ready).await;

    let cgroup = weir_ebpf::cgroup::v2_root().unwrap().join(&tag).join("cart");
    let answer = workload_curl(&cgroup, "http://127.0.0.78/v2/items");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("/v2/items traceparent=00-"), "routed, with trace context from the host: {answer}");
    let unrouted = workload_curl(&cgroup, "http://127.0.0.78/other");
    assert!(unrouted.starts_with("HTTP/1.1 503"), "no route to service web on the DPU: {unrouted}");

    let host_metrics = host.metrics_text();
    assert_eq!(http_requests(&host_metrics, "2xx"), 1.0, "the host ran L7: {host_metrics}");
    assert_eq!(metric(&host_metrics, "weir_connections_opened_total", &["mode=\"host_channel\""]), 1.0);
    let dpu_metrics = dpu_node.node.metrics_text();
    assert_eq!(http_requests(&dpu_metrics, "2xx"), 0.0, "and the DPU did not: {dpu_metrics}");
    assert!(mesh.server.metrics_text().contains(&format!("peer=\"{}\"", id("cart"))), "the peer saw the workload");

    // The DPU is given L7 for echo too: one rule set in two places, reported by both planes.
    dpu_node.node.shutdown(Duration::from_millis(100)).await;
    dpu_node = dpu_with(&mesh, &ca, &Opts::new("off"), addrs, ("protocol = \"http\"", "")).await;
    let conflict = "L7 for echo is configured on both planes";
    let body = wait_readyz(host.admin_addr(), Duration::from_secs(10), "double placement", |s, b| {
        s == 503 && b.contains(conflict)
    })
    .await;
    assert!(body.contains("plane dpu"), "{body}");
    wait_readyz(dpu_node.node.admin_addr(), Duration::from_secs(10), "double placement, dpu side", |s, b| {
        s == 503 && b.contains("plane host") && b.contains(conflict)
    })
    .await;

    host.shutdown(Duration::from_millis(100)).await;
    dpu_node.node.shutdown(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_on_the_host_is_reached_through_the_dpu_with_its_l7_policy_on_the_host() {
    let mut opts = Opts::new("off");
    opts.allow = vec![id("client"), id("cart")];
    let mesh = Mesh::start(opts).await;
    let ca = mesh.dir.path().join("ca");
    let (backend, host_in, dpu_in) = (http_backend().await, free_addr(), free_addr());
    let client_id = id("client");
    // The DPU terminates the wire and admits the client; the service lives on the host.
    let on_host = format!(
        "[inbound]\nlisten = \"{dpu_in}\"\n[[inbound.services]]\nname = \"echo\"\nbackend = \"{host_in}\"\n\
         allow = [\"{client_id}\"]\non_host = true\n"
    );
    let addrs = (free_addr(), free_addr());
    let dpu_node = dpu_with(&mesh, &ca, &Opts::new("off"), addrs, (&on_host, "key_rotation_secs = 2")).await;
    let tag = format!("weir-in-{}", std::process::id());
    let _cleanup = Cleanup(tag.clone());
    // The host plane serves it, with its L7 policy placed here.
    let serving = format!(
        "[[outbound]]\nservice = \"echo\"\ncapture = [\"127.0.0.79:7\"]\n[inbound]\nlisten = \"{host_in}\"\n\
         [[inbound.services]]\nname = \"echo\"\nbackend = \"{backend}\"\nallow = [\"{client_id}\"]\nprotocol = \"http\"\n\
         [[inbound.services.http.rules]]\naction = \"deny\"\npath_prefix = \"/admin\"\n"
    );
    let host = host_plane(&mesh, &tag, &dpu_node, &serving).await;
    wait_readyz(host.admin_addr(), Duration::from_secs(10), "host plane", |s, _| s == 200).await;
    let client = common::client_node(&node_config(&ca, "client", &Opts::new("off")), dpu_in, &id("dpu")).await;

    let out = client.outbound_addrs()[0];
    let ok = get(out, "/items").await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert!(ok.contains("/items traceparent=00-"), "the host's L7 added trace context: {ok}");
    let denied = get(out, "/admin/keys").await;
    assert!(denied.starts_with("HTTP/1.1 403"), "the host's rule: {denied}");

    let host_metrics = host.metrics_text();
    assert_eq!(
        (http_requests(&host_metrics, "2xx"), http_requests(&host_metrics, "4xx")),
        (1.0, 1.0),
        "{host_metrics}"
    );
    let opened =
        metric(&host_metrics, "weir_connections_opened_total", &["direction=\"Inbound\"", "mode=\"host_channel\""]);
    assert_eq!(opened, 2.0, "{host_metrics}");
    assert!(host_metrics.contains(&format!("peer=\"{client_id}\"")), "the host knows the caller: {host_metrics}");
    let dpu_metrics = dpu_node.node.metrics_text();
    assert_eq!(http_requests(&dpu_metrics, "2xx") + http_requests(&dpu_metrics, "4xx"), 0.0, "no L7 on the DPU");

    // A connection kept open: the host's record of it carries the DPU's wire leg.
    let mut kept = TcpStream::connect(out).await.unwrap();
    kept.write_all(b"GET /kept HTTP/1.1\r\nHost: echo\r\n\r\n").await.unwrap();
    let mut head = [0u8; 12];
    kept.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let wire = loop {
        let inbound = host.connections().into_iter().find(|c| c.direction == "inbound");
        if let Some(wire) = inbound.and_then(|c| c.wire) {
            break wire;
        }
        assert!(tokio::time::Instant::now() < deadline, "no wire leg joined: {:?}", host.connections());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!((wire.role.as_str(), wire.direction.as_str()), ("dpu", "inbound"));
    assert_eq!(wire.peer, client_id.to_string(), "the wire leg's peer is the caller");
    drop(kept);

    // Only the DPU can open the host's inbound listener: a forged preamble, and an outbound
    // one (the wrong direction's key), are refused.
    let refused = |reason: &str| metric(&host.metrics_text(), "weir_connections_refused_total", &[reason]);
    for preamble in [sealed(&[0x11; 32], "client"), sealed(&KEY, "client")] {
        let mut s = TcpStream::connect(host_in).await.unwrap();
        s.write_all(&preamble).await.unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest).await;
        assert!(rest.is_empty(), "no answer to a refused preamble");
    }
    assert_eq!(refused("host_preamble_forged"), 2.0);

    // The channel key rotates every 2 s over the control connection: both directions keep
    // working, and the key file's key is refused two rotations on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while metric(&host.metrics_text(), "weir_channel_key_rotations_total", &[]) < 2.0 {
        assert!(tokio::time::Instant::now() < deadline, "no two key rotations reached the host plane");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(get(out, "/items").await.starts_with("HTTP/1.1 200"), "inbound under a rotated key");
    let cgroup = weir_ebpf::cgroup::v2_root().unwrap().join(&tag).join("cart");
    assert_eq!(workload_echo_to(&cgroup, "127.0.0.79", "rotated"), "rotated", "outbound under a rotated key");
    assert_eq!(through(&dpu_node, &sealed(&KEY, "cart"), 10).await, (None, false), "the key file's key");
    assert!(metric(&dpu_node.node.metrics_text(), "weir_channel_key_rotations_total", &[]) >= 2.0);

    drop(client);
    host.shutdown(Duration::from_millis(100)).await;
    dpu_node.node.shutdown(Duration::from_millis(100)).await;
}
