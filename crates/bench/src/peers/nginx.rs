//! nginx as the reference mesh: a master with one worker per instance, `stream {}` with
//! `proxy_ssl on` for byte streams, `http {}` for HTTP/1.1. Best settings: in `http` keep-alive
//! on both sides with pooled upstream connections (`keepalive` in the upstream blocks,
//! `proxy_http_version 1.1`, an empty `Connection` header), no access log, responses relayed
//! unbuffered. TLS 1.3 AES-128-GCM, client certificates verified; TLS sessions resume as nginx
//! does by default. Long timeouts, 16384 connections per worker and a deep accept queue, so the
//! idle scenario's thousands of connections open and stay open. Errors go to stderr, the log.
use super::{Certs, Chain, Mode};
use std::net::SocketAddr;
use std::path::Path;

/// Debian's nginx builds the stream module as a dynamic module.
const STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

pub(super) fn start(
    bin: &Path,
    dir: &Path,
    certs: &Certs,
    backend: SocketAddr,
    cpus: &str,
    mode: Mode,
) -> anyhow::Result<Chain> {
    use std::os::unix::fs::MetadataExt as _;
    let (entry, middle) = (crate::free_port()?, crate::free_port()?);
    if mode == Mode::Tcp && !Path::new(STREAM_MODULE).exists() {
        anyhow::bail!("{STREAM_MODULE} is missing: nginx has no stream module (Debian: libnginx-mod-stream)");
    }
    let root = certs.root.display();
    // `proxy_ssl_verify` would also match a DNS name against B's certificate, and an SVID names
    // its workload in a URI SAN only: OpenSSL itself verifies the chain against the mesh CA, and
    // fails the handshake when it does not verify.
    let originate = format!(
        "proxy_ssl_protocols TLSv1.3;\n    proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;\n    \
         proxy_ssl_certificate {};\n    proxy_ssl_certificate_key {};\n    \
         proxy_ssl_conf_command VerifyMode Peer;\n    proxy_ssl_conf_command VerifyCAFile {root};\n",
        certs.client_chain.display(),
        certs.client_key.display()
    );
    let terminate = format!(
        "ssl_protocols TLSv1.3;\n    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;\n    \
         ssl_certificate {};\n    ssl_certificate_key {};\n    \
         ssl_client_certificate {root};\n    ssl_verify_client on;\n",
        certs.server_chain.display(),
        certs.server_key.display()
    );
    // backlog=4096 (the kernel's cap, which haproxy and Envoy get anyway): with nginx's 511 the
    // idle scenario's back-to-back connects overflow the accept queue and the kernel loses some.
    let (a, b) = match mode {
        Mode::Tcp => (
            stream(&format!(
                "listen {entry} backlog=4096;\n    proxy_pass {middle};\n    proxy_ssl on;\n    {originate}"
            )),
            stream(&format!("listen {middle} ssl backlog=4096;\n    proxy_pass {backend};\n    {terminate}")),
        ),
        Mode::Http => (
            http(&dir.join("a-tmp"), middle, "https", &format!("listen {entry} backlog=4096;\n    {originate}"))?,
            http(&dir.join("b-tmp"), backend, "http", &format!("listen {middle} ssl backlog=4096;\n    {terminate}"))?,
        ),
    };
    let module = if mode == Mode::Tcp { format!("load_module {STREAM_MODULE};\n") } else { String::new() };
    // As root the master would hand its worker to `nobody`, who cannot read `dir`.
    let user = if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) { "user root root;\n" } else { "" };
    let d = dir.display();
    let mut instances = Vec::new();
    for (name, body) in [("a", a), ("b", b)] {
        // A proxied connection takes two of the worker's connections and descriptors.
        let cfg = format!(
            "{module}{user}worker_processes 1;\nworker_rlimit_nofile 20000;\npid {d}/{name}.pid;\n\
             error_log stderr warn;\nevents {{\n  worker_connections 16384;\n}}\n{body}"
        );
        let path = dir.join(format!("{name}.conf"));
        std::fs::write(&path, cfg)?;
        let args = ["-p", &d.to_string(), "-c", &path.display().to_string(), "-e", "stderr", "-g", "daemon off;"];
        instances.push((name, args.map(str::to_owned).to_vec()));
    }
    Chain::spawn(dir, bin, cpus, instances, entry, middle)
}

// proxy_connect_timeout also bounds the TLS handshake with the upstream, which queues behind
// thousands of others when the idle scenario opens its connections: 5 s lost some of them.
const CONNECT_TIMEOUT: &str = "proxy_connect_timeout 1m;\n";

fn stream(server: &str) -> String {
    format!("stream {{\n  tcp_nodelay on;\n  {CONNECT_TIMEOUT}  proxy_timeout 1h;\n  server {{\n    {server}  }}\n}}\n")
}

/// An `http {}` block with one server proxying everything to `scheme://to`, temp files in `tmp`.
fn http(tmp: &Path, to: SocketAddr, scheme: &str, server: &str) -> anyhow::Result<String> {
    std::fs::create_dir_all(tmp)?;
    let t = tmp.display();
    // Unbuffered through one 64 KiB buffer relays a 1 MiB response fastest (about 450/s here
    // against 340 with nginx's default buffering, which spills to a temp file); `proxy_buffers`
    // only has to be large enough for nginx to accept that buffer size.
    Ok(format!(
        "http {{\n  access_log off;\n  \
         client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  \
         uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  \
         keepalive_timeout 1h;\n  keepalive_requests 100000;\n  \
         proxy_http_version 1.1;\n  proxy_set_header Host $http_host;\n  proxy_set_header Connection \"\";\n  \
         {CONNECT_TIMEOUT}  proxy_read_timeout 1h;\n  proxy_send_timeout 1h;\n  \
         proxy_buffering off;\n  proxy_buffer_size 64k;\n  proxy_buffers 4 64k;\n  \
         upstream next {{\n    server {to};\n    keepalive 1024;\n    keepalive_requests 100000;\n    \
         keepalive_timeout 1h;\n  }}\n  \
         server {{\n    {server}    location / {{\n      proxy_pass {scheme}://next;\n    }}\n  }}\n}}\n"
    ))
}
