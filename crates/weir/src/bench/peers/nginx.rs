//! nginx as the reference mesh: a master with one worker per instance, `stream {}` with
//! `proxy_ssl on` for byte streams, `http {}` for HTTP/1.1. Best settings: in `http` keep-alive
//! on both sides with pooled upstream connections (`keepalive` in the upstream blocks,
//! `proxy_http_version 1.1` and an empty `Connection` header) and no access log; responses
//! stream through in-memory buffers, never a temp file. TLS 1.3 AES-128-GCM, client certificates
//! verified; TLS sessions resume as nginx does by default. Long timeouts and 16384 connections
//! per worker, so idle connections stay open by the thousand. Errors go to stderr, the chain's log.
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
    let (entry, middle) = (crate::bench::free_port()?, crate::bench::free_port()?);
    if mode == Mode::Tcp && !Path::new(STREAM_MODULE).exists() {
        anyhow::bail!("nginx stream module not installed: {STREAM_MODULE} is missing (Debian: libnginx-mod-stream)");
    }
    let (chain, key, root) = (certs.client_chain.display(), certs.client_key.display(), certs.root.display());
    // `proxy_ssl_verify` would also match a DNS name against the certificate, and SVIDs name
    // their workload in a URI SAN only: OpenSSL verifies the chain against the mesh CA instead,
    // and fails the handshake when it does not verify.
    let originate = format!(
        "proxy_ssl_protocols TLSv1.3;\n    proxy_ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;\n    \
         proxy_ssl_certificate {chain};\n    proxy_ssl_certificate_key {key};\n    \
         proxy_ssl_conf_command VerifyMode Peer;\n    proxy_ssl_conf_command VerifyCAFile {root};\n"
    );
    let (chain, key) = (certs.server_chain.display(), certs.server_key.display());
    let terminate = format!(
        "ssl_protocols TLSv1.3;\n    ssl_conf_command Ciphersuites TLS_AES_128_GCM_SHA256;\n    \
         ssl_certificate {chain};\n    ssl_certificate_key {key};\n    \
         ssl_client_certificate {root};\n    ssl_verify_client on;\n"
    );
    // As root the master would hand its worker to `nobody`, who cannot read `dir`.
    let user = if std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0) { "user root root;\n" } else { "" };
    let mut instances = Vec::new();
    for name in ["a", "b"] {
        let d = dir.display();
        let body = match (mode, name) {
            (Mode::Tcp, "a") => stream(&format!("listen {entry} backlog=4096;\n    proxy_pass {middle};\n    proxy_ssl on;\n    {originate}")),
            (Mode::Tcp, _) => stream(&format!("listen {middle} ssl backlog=4096;\n    {terminate}    proxy_pass {backend};\n")),
            (Mode::Http, "a") => {
                http(dir, name, middle, &format!("listen {entry} backlog=4096;\n    location / {{\n      proxy_pass https://next;\n    }}\n    {originate}"))?
            }
            (Mode::Http, _) => {
                http(dir, name, backend, &format!("listen {middle} ssl backlog=4096;\n    {terminate}    location / {{\n      proxy_pass http://next;\n    }}\n"))?
            }
        };
        let module = if mode == Mode::Tcp { format!("load_module {STREAM_MODULE};\n") } else { String::new() };
        // 16384 connections: a proxied connection takes two (client and upstream side).
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

fn stream(server: &str) -> String {
    format!(
        "stream {{\n  tcp_nodelay on;\n  proxy_connect_timeout 1m;\n  proxy_timeout 1h;\n  \
         server {{\n    {server}  }}\n}}\n"
    )
}

/// An `http {}` block whose one server proxies `location /` to the upstream `next` at `to`.
fn http(dir: &Path, name: &str, to: SocketAddr, server: &str) -> anyhow::Result<String> {
    let tmp = dir.join(format!("{name}-tmp"));
    std::fs::create_dir_all(&tmp)?;
    let t = tmp.display();
    // Unbuffered proxying through one 64 KiB buffer relays a 1 MiB response fastest here (about
    // 450 responses/s against 340 with nginx's default buffering, which spills to a temp file);
    // `proxy_buffers` only has to be large enough for nginx to accept that buffer size.
    Ok(format!(
        "http {{\n  access_log off;\n  \
         client_body_temp_path {t}/body;\n  proxy_temp_path {t}/proxy;\n  fastcgi_temp_path {t}/fastcgi;\n  \
         uwsgi_temp_path {t}/uwsgi;\n  scgi_temp_path {t}/scgi;\n  \
         keepalive_timeout 1h;\n  keepalive_requests 100000;\n  \
         proxy_http_version 1.1;\n  proxy_set_header Host $http_host;\n  proxy_set_header Connection \"\";\n  \
         proxy_connect_timeout 1m;\n  proxy_read_timeout 1h;\n  proxy_send_timeout 1h;\n  \
         proxy_buffering off;\n  proxy_buffer_size 64k;\n  proxy_buffers 4 64k;\n  \
         upstream next {{\n    server {to};\n    keepalive 1024;\n    keepalive_requests 100000;\n    keepalive_timeout 1h;\n  }}\n  \
         server {{\n    {server}  }}\n}}\n"
    ))
}
