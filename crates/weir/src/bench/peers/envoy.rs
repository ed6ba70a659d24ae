//! Envoy as the reference mesh: one static listener and one static cluster per instance,
//! `tcp_proxy` for byte streams, `http_connection_manager` with the router for HTTP/1.1. Best
//! settings: one worker thread (`--concurrency 1`), no admin interface, no access log, no
//! request-ID generation (nothing reads the IDs and each costs a random UUID); upstream HTTP/1.1
//! connections are pooled by Envoy by default. TLS 1.3 with client certificates verified
//! against the mesh CA; BoringSSL offers no TLS 1.3 cipher suite setting, and negotiates
//! AES-128-GCM first on CPUs with AES instructions. The circuit breakers are raised from their
//! default of 1024 (they would cap the idle scenario's connections) and every timeout is an hour
//! or off, so idle connections stay open.
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
    let (entry, middle) = (crate::bench::free_port()?, crate::bench::free_port()?);
    let filter = match mode {
        Mode::Tcp => TCP_PROXY,
        Mode::Http => HTTP_ROUTER,
    };
    // The cluster speaks HTTP/1.1 to its endpoint (and keeps the connections for reuse).
    let cluster_http = match mode {
        Mode::Tcp => "",
        Mode::Http => HTTP1_UPSTREAM,
    };
    let (client, server) = (
        tls_context(&certs.client_chain, &certs.client_key, &certs.root),
        tls_context(&certs.server_chain, &certs.server_key, &certs.root),
    );
    // No match on the peer's URI SAN: like the other meshes, any SVID of the mesh CA is accepted.
    let a_tls = format!(
        "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \
         \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n{client}"
    );
    let b_tls = format!(
        "      transport_socket:\n        name: envoy.transport_sockets.tls\n        typed_config:\n          \
         \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext\n          \
         require_client_certificate: true\n{}",
        indent(&server, 2)
    );
    let mut instances = Vec::new();
    for (name, listen, to, listener_tls, cluster_tls) in
        [("a", entry, middle, "", a_tls.as_str()), ("b", middle, backend, b_tls.as_str(), "")]
    {
        let cfg = format!(
            "{OVERLOAD}static_resources:\n  listeners:\n  - name: {name}\n{}    filter_chains:\n    - filters:\n{filter}{listener_tls}  \
             clusters:\n  - name: next\n    connect_timeout: 5s\n    type: STATIC\n{}    circuit_breakers:\n      \
             thresholds:\n      - max_connections: 100000\n        max_pending_requests: 100000\n        \
             max_requests: 100000\n{cluster_http}{cluster_tls}",
            socket(listen, 4, "address:"),
            socket(to, 4, "load_assignment:\n  cluster_name: next\n  endpoints:\n  - lb_endpoints:\n    - endpoint:\n        address:"),
        );
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, cfg)?;
        // Hot restart off: the instances then share no memory region, no --base-id is needed.
        let args =
            ["-c", &path.display().to_string(), "--concurrency", "1", "--disable-hot-restart", "--log-level", "warn"];
        instances.push((name, args.map(str::to_owned).to_vec()));
    }
    Chain::spawn(dir, bin, cpus, instances, entry, middle)
}

/// `head` (YAML lines) indented by `pad`, then `addr` as a `socket_address` under its last line.
fn socket(addr: SocketAddr, pad: usize, head: &str) -> String {
    let head = indent(head, pad);
    let last = head.lines().last().unwrap_or_default();
    let inner = " ".repeat(last.len() - last.trim_start().len() + 2);
    format!("{head}{inner}socket_address:\n{inner}  address: {}\n{inner}  port_value: {}\n", addr.ip(), addr.port())
}

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

/// `common_tls_context` at the indentation of an upstream `typed_config`.
fn tls_context(chain: &Path, key: &Path, root: &Path) -> String {
    format!(
        "        common_tls_context:\n          tls_params:\n            tls_minimum_protocol_version: TLSv1_3\n            \
         tls_maximum_protocol_version: TLSv1_3\n          tls_certificates:\n          - certificate_chain:\n              \
         filename: {}\n            private_key:\n              filename: {}\n          validation_context:\n            \
         trusted_ca:\n              filename: {}\n",
        chain.display(),
        key.display(),
        root.display()
    )
}

const TCP_PROXY: &str = "      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: next
          idle_timeout: 3600s
";

const HTTP_ROUTER: &str = "      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: http
          codec_type: HTTP1
          generate_request_id: false
          common_http_protocol_options:
            idle_timeout: 3600s
          route_config:
            virtual_hosts:
            - name: all
              domains: [\"*\"]
              routes:
              - match:
                  prefix: /
                route:
                  cluster: next
                  timeout: 0s
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
";

const HTTP1_UPSTREAM: &str = "    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options:
          idle_timeout: 3600s
        explicit_http_config:
          http_protocol_options: {}
";

// A limit far above the idle scenario's connections: without one Envoy warns at start-up, and
// the chain's log is meant to hold only problems.
const OVERLOAD: &str = "overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 100000
";
