//! haproxy as the reference mesh. Best settings: one thread per instance; in `mode tcp`
//! `option splice-auto` on the plaintext legs; in `mode http` keep-alive on both sides and
//! `http-reuse always` (splice cannot apply there: each instance has one TLS leg). TLS 1.3
//! AES-128-GCM, client certificates verified.
use super::{Certs, Chain, Mode};
use std::net::SocketAddr;
use std::path::Path;

pub(super) fn start(
    bin: &Path,
    dir: &Path,
    certs: &Certs,
    backend: SocketAddr,
    cpus: &str,
    mode: Mode,
) -> anyhow::Result<Chain> {
    let (entry, middle) = (crate::free_port()?, crate::free_port()?);
    let defaults = match mode {
        Mode::Tcp => "defaults\n  mode tcp\n  option splice-auto\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n",
        Mode::Http => "defaults\n  mode http\n  option http-keep-alive\n  http-reuse always\n  timeout connect 5s\n  timeout client 1h\n  timeout server 1h\n  timeout http-request 1h\n  timeout http-keep-alive 1h\n",
    };
    // maxconn 7900: haproxy reserves 2.5 descriptors per connection, so it starts under the
    // 20000 open-file limit of these machines.
    let global = format!("global\n  nbthread 1\n  maxconn 7900\n  ssl-default-server-ciphersuites TLS_AES_128_GCM_SHA256\n  ssl-default-bind-ciphersuites TLS_AES_128_GCM_SHA256\n{defaults}");
    let a = format!(
        "{global}listen out\n  bind {entry}\n  maxconn 7900\n  server b {middle} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3\n",
        certs.client_bundle.display(),
        certs.root.display()
    );
    let b = format!(
        "{global}listen in\n  bind {middle} ssl crt {} ca-file {} verify required ssl-min-ver TLSv1.3\n  maxconn 7900\n  server backend {backend}\n",
        certs.server_bundle.display(),
        certs.root.display()
    );
    let mut instances = Vec::new();
    for (name, cfg) in [("a", a), ("b", b)] {
        let path = dir.join(format!("{name}.cfg"));
        std::fs::write(&path, cfg)?;
        instances.push((name, vec!["-db".to_owned(), "-f".to_owned(), path.display().to_string()]));
    }
    Chain::spawn(dir, bin, cpus, instances, entry, middle)
}
