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
    let (entry, middle) = (crate::free_port()?, crate::free_port()?);
    let (filter, cluster_http) = match mode {
        Mode::Tcp => (TCP_PROXY, ""),
        Mode::Http => (HTTP_ROUTER, HTTP1_UPSTREAM),
    };
    // No match on the peer's URI SAN: like the other meshes, any SVID of the mesh CA is accepted.
    let a_tls = tls("UpstreamTlsContext", "", &certs.client_chain, &certs.client_key, &certs.root);
    let b_tls = tls(
        "DownstreamTlsContext",
        "    require_client_certificate: true\n",
        &certs.server_chain,
        &certs.server_key,
        &certs.root,
    );
    let mut instances = Vec::new();
    for (name, listen, to, listener_tls, cluster_tls) in [
        ("a", entry, middle, String::new(), indent(&a_tls, 4)),
        ("b", middle, backend, indent(&b_tls, 6), String::new()),
    ] {
        let cfg = format!(
            "{OVERLOAD}static_resources:
  listeners:
  - name: {name}
    address:
{listen}
    filter_chains:
    - filters:
{filter}{listener_tls}  clusters:
  - name: next
    connect_timeout: 5s
    type: STATIC
    load_assignment:
      cluster_name: next
      endpoints:
      - lb_endpoints:
        - endpoint:
            address:
{to}
    circuit_breakers:
      thresholds:
      - max_connections: 100000
        max_pending_requests: 100000
        max_requests: 100000
{cluster_http}{cluster_tls}",
            listen = socket(listen, 6),
            to = socket(to, 14),
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

fn socket(addr: SocketAddr, pad: usize) -> String {
    let p = " ".repeat(pad);
    format!("{p}socket_address:\n{p}  address: {}\n{p}  port_value: {}", addr.ip(), addr.port())
}

fn indent(text: &str, by: usize) -> String {
    text.lines().map(|l| format!("{}{l}\n", " ".repeat(by))).collect()
}

/// A TLS 1.3 `transport_socket` with `context` (the message type) holding `extra` lines too.
fn tls(context: &str, extra: &str, chain: &Path, key: &Path, root: &Path) -> String {
    format!(
        "transport_socket:
  name: envoy.transport_sockets.tls
  typed_config:
    \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.{context}
{extra}    common_tls_context:
      tls_params:
        tls_minimum_protocol_version: TLSv1_3
        tls_maximum_protocol_version: TLSv1_3
      tls_certificates:
      - certificate_chain:
          filename: {}
        private_key:
          filename: {}
      validation_context:
        trusted_ca:
          filename: {}
",
        chain.display(),
        key.display(),
        root.display()
    )
}

// A limit far above the idle scenario's connections: without one Envoy warns at start-up, and
// the chain's log is meant to hold only problems.
const OVERLOAD: &str = "overload_manager:
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      \"@type\": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 100000
";

const TCP_PROXY: &str = "      - name: envoy.filters.network.tcp_proxy
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: next
          idle_timeout: 3600s
";

// The route timeout (15 s by default) is off: a response may take as long as it takes.
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

// The cluster speaks HTTP/1.1 to its endpoint and keeps idle connections for an hour.
const HTTP1_UPSTREAM: &str = "    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        common_http_protocol_options:
          idle_timeout: 3600s
        explicit_http_config:
          http_protocol_options: {}
";
