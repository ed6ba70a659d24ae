use super::*;

const GOOD: &str = r#"
trust_domain = "weir.local"

[identity]
namespace = "default"
service_account = "client"
ca_dir = "/tmp/ca"
svid_ttl_secs = 60

[inbound]
listen = "127.0.0.1:15008"

[[inbound.services]]
name = "echo"
backend = "127.0.0.1:8080"
allow = ["spiffe://weir.local/ns/default/sa/client"]

[[outbound]]
listen = "127.0.0.1:15001"
service = "echo"
peer = "127.0.0.1:15008"
peer_id = "spiffe://weir.local/ns/default/sa/server"
"#;

#[test]
fn default_config_is_valid() {
    let c = default_config();
    assert_eq!(c.trust_domain, "weir.local");
    assert!(matches!(c.identity.ca, CaSource::Local { create_if_missing: true, .. }), "the demo creates its CA");
    assert!(c.inbound.as_ref().is_some_and(|i| i.services.is_empty()), "default admits nobody");
}

#[test]
fn parses_a_full_config() {
    let c = parse(GOOD, "good.toml").expect("valid config");
    assert_eq!(c.identity.id.as_str(), "spiffe://weir.local/ns/default/sa/client");
    assert_eq!(c.identity.svid_ttl.as_secs(), 60);
    let inbound = c.inbound.expect("inbound present");
    assert_eq!(inbound.services[0].allow[0].as_str(), "spiffe://weir.local/ns/default/sa/client");
    assert_eq!(c.outbound[0].peer_id.as_str(), "spiffe://weir.local/ns/default/sa/server");
    assert_eq!(c.ktls.mode, KtlsMode::Auto);
}

#[test]
fn reports_every_bad_field_with_path_and_line() {
    let bad = GOOD
        .replace("svid_ttl_secs = 60", "svid_ttl_secs = 1")
        .replace("backend = \"127.0.0.1:8080\"", "backend = \"nowhere\"")
        .replace("allow = [\"spiffe://weir.local/ns/default/sa/client\"]", "allow = [\"spiffe://weir.local/ns//sa\"]")
        .replace("peer_id = \"spiffe://weir.local/ns/default/sa/server\"", "peer_id = \"server\"");
    let err = parse(&bad, "bad.toml").expect_err("invalid config");
    let got: Vec<(&str, Option<usize>)> = err.fields.iter().map(|f| (f.path.as_str(), f.line)).collect();
    assert_eq!(
        got,
        vec![
            ("identity.svid_ttl_secs", Some(8)),
            ("inbound.services[0].backend", Some(15)),
            ("inbound.services[0].allow[0]", Some(16)),
            ("outbound[0].peer_id", Some(22)),
        ]
    );
    let text = err.to_string();
    assert!(text.contains("bad.toml:15: inbound.services[0].backend: \"nowhere\" is not an address:port"), "{text}");
}

#[test]
fn reports_missing_required_fields() {
    let err = parse("[[outbound]]\nlisten = \"127.0.0.1:1\"\n", "m.toml").expect_err("invalid");
    let paths: Vec<&str> = err.fields.iter().map(|f| f.path.as_str()).collect();
    for want in ["trust_domain", "identity", "outbound[0].service", "outbound[0].peer", "outbound[0].peer_id"] {
        assert!(paths.contains(&want), "missing {want} in {paths:?}");
    }
}

#[test]
fn unknown_field_and_wrong_type_name_the_field() {
    let err =
        parse(&GOOD.replace("svid_ttl_secs = 60", "svid_ttl_secs = 60\nttl = 5"), "u.toml").expect_err("unknown field");
    assert_eq!(err.fields[0].path, "identity.ttl");
    assert_eq!(err.fields[0].line, Some(9));
    assert!(err.fields[0].reason.contains("unknown field"), "{:?}", err.fields[0]);
    let err = parse(&GOOD.replace("svid_ttl_secs = 60", "svid_ttl_secs = \"soon\""), "t.toml").expect_err("wrong type");
    assert_eq!(err.fields[0].path, "identity.svid_ttl_secs");
    assert_eq!(err.fields[0].line, Some(8));
}

#[test]
fn duplicate_names_and_ports_are_errors() {
    let dup = format!("{GOOD}\n[[inbound.services]]\nname = \"echo\"\nbackend = \"127.0.0.1:1\"\n\n[[outbound]]\nlisten = \"127.0.0.1:15001\"\nservice = \"x\"\npeer = \"127.0.0.1:1\"\npeer_id = \"spiffe://weir.local/ns/a/sa/b\"\n");
    let err = parse(&dup, "d.toml").expect_err("duplicates");
    let paths: Vec<&str> = err.fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(paths, vec!["inbound.services[1].name", "outbound[1].listen"]);
}

#[test]
fn workloads_and_capture_compile_or_name_the_bad_field() {
    let good = format!(
        "{GOOD}\n[kernel]\nmode = \"ebpf\"\n\n[[workloads]]\nname = \"web\"\nservice_account = \"web\"\ndeny = [\"10.0.0.0/8:443\", \"::1\"]\nmax_connections = 5\n"
    )
    .replace("peer_id = \"spiffe://weir.local/ns/default/sa/server\"", "peer_id = \"spiffe://weir.local/ns/default/sa/server\"\ncapture = [\"10.96.0.1:80\"]");
    let c = parse(&good, "k.toml").expect("valid");
    assert_eq!(c.kernel.mode, KernelMode::Ebpf);
    assert_eq!(c.workloads[0].id.as_str(), "spiffe://weir.local/ns/default/sa/web");
    assert_eq!(c.workloads[0].l4.max_connections, 5);
    assert_eq!(c.outbound[0].capture, vec!["10.96.0.1:80".parse::<std::net::SocketAddr>().expect("addr")]);

    let bad = good.replace("\"10.0.0.0/8:443\"", "\"10.0.0.1/8\"").replace("\"::1\"", "\"10.0.0.0/8:0\"");
    let err = parse(&bad, "k.toml").expect_err("bad rules");
    let got: Vec<&str> = err.fields.iter().map(|f| f.path.as_str()).collect();
    assert_eq!(got, vec!["workloads[0].deny[0]", "workloads[0].deny[1]"], "{err}");
    assert!(err.to_string().contains("host bits") && err.to_string().contains("port 0"), "{err}");

    let no_kernel = good.replace("mode = \"ebpf\"", "mode = \"off\"");
    let err = parse(&no_kernel, "k.toml").expect_err("workloads need the kernel path");
    assert_eq!(err.fields[0].path, "workloads");
}

const ALLOW_LINE: &str = "allow = [\"spiffe://weir.local/ns/default/sa/client\"]";

/// `GOOD` with `extra` (TOML) appended to the `echo` service's table.
fn with_service(extra: &str) -> String {
    GOOD.replace(ALLOW_LINE, &format!("{ALLOW_LINE}\n{extra}"))
}

/// The (path, line) of every field error in `source`.
fn field_errors(source: &str) -> Vec<(String, Option<usize>)> {
    let err = parse(source, "h.toml").expect_err("invalid config");
    err.fields.iter().map(|f| (f.path.clone(), f.line)).collect()
}

const HTTP_FULL: &str = r#"protocol = "http"
[inbound.services.http]
mode = "copy"
max_head_bytes = 8192
max_headers = 50
request_head_timeout_ms = 1500
response_timeout_ms = 2500
default = "deny"
[[inbound.services.http.rules]]
action = "allow"
from = ["spiffe://weir.local/ns/default/sa/client"]
methods = ["GET", "POST"]
path_prefix = "/api"
headers = [{ name = "X-Debug", value = "1" }, { name = "x-present" }]
[[inbound.services.http.rules]]
action = "deny"
path = "/admin"
[[inbound.services.http.rate_limits]]
per_second = 5
[[inbound.services.http.rate_limits]]
from = "spiffe://weir.local/ns/default/sa/client"
path_prefix = "/api"
per_second = 2
burst = 7"#;

#[test]
fn an_http_service_compiles_to_its_policy() {
    let c = parse(&with_service(HTTP_FULL), "h.toml").expect("valid http service");
    let svc = &c.inbound.expect("inbound").services[0];
    let http = svc.http.as_ref().expect("protocol = \"http\" gives an http config");
    assert!(http.copy);
    assert_eq!((http.max_head_bytes, http.max_headers), (8192, 50));
    assert_eq!(http.request_head_timeout, std::time::Duration::from_millis(1500));
    assert_eq!(http.response_timeout, std::time::Duration::from_millis(2500));
    let client: weir_identity::SpiffeId = "spiffe://weir.local/ns/default/sa/client".parse().expect("id");
    let want = weir_policy::HttpPolicy {
        rules: vec![
            weir_policy::HttpRule {
                from: vec![client.clone()],
                methods: vec!["GET".into(), "POST".into()],
                path: weir_policy::PathMatch::Prefix("/api".into()),
                headers: vec![
                    weir_policy::HeaderMatch { name: "x-debug".into(), value: Some(b"1".to_vec()) },
                    weir_policy::HeaderMatch { name: "x-present".into(), value: None },
                ],
                action: weir_policy::Action::Allow,
            },
            weir_policy::HttpRule {
                from: vec![],
                methods: vec![],
                path: weir_policy::PathMatch::Exact("/admin".into()),
                headers: vec![],
                action: weir_policy::Action::Deny,
            },
        ],
        default: weir_policy::Action::Deny,
        rate_limits: vec![
            weir_policy::RateLimit { from: None, path_prefix: "/".into(), per_second: 5, burst: 5 },
            weir_policy::RateLimit { from: Some(client), path_prefix: "/api".into(), per_second: 2, burst: 7 },
        ],
    };
    assert_eq!(http.policy, want);
}

#[test]
fn http_defaults_and_plain_tcp() {
    let c = parse(&with_service("protocol = \"http\""), "h.toml").expect("http without a section");
    let http = c.inbound.expect("inbound").services[0].http.clone().expect("http config");
    assert!(!http.copy, "splice by default");
    assert_eq!((http.max_head_bytes, http.max_headers), (16 * 1024, 100));
    assert_eq!(http.request_head_timeout, std::time::Duration::from_secs(60));
    assert_eq!(http.response_timeout, std::time::Duration::from_secs(30));
    assert_eq!(http.policy.default, weir_policy::Action::Allow);
    assert!(http.policy.rules.is_empty() && http.policy.rate_limits.is_empty());
    for tcp in [GOOD.to_owned(), with_service("protocol = \"tcp\"")] {
        let c = parse(&tcp, "t.toml").expect("tcp service");
        assert!(c.inbound.expect("inbound").services[0].http.is_none(), "tcp is L4 only");
    }
}

#[test]
fn http_section_reports_every_bad_field_with_path_and_line() {
    // Lines: the service's table starts at line 13, its extra text at line 17.
    let bad = with_service(
        r#"protocol = "http"
[inbound.services.http]
mode = "fast"
max_head_bytes = 10
max_headers = 0
request_head_timeout_ms = 5
response_timeout_ms = -1
default = "maybe"
[[inbound.services.http.rules]]
action = "block"
from = ["spiffe://weir.local/ns//sa"]
methods = ["GET", "get"]
path = "/a/../b"
[[inbound.services.http.rules]]
action = "deny"
path_prefix = "/x//"
headers = [{ name = "bad name" }]
[[inbound.services.http.rules]]
action = "deny"
path = "/a"
path_prefix = "/a"
[[inbound.services.http.rules]]
action = "deny"
path = "/a%2Fb"
[[inbound.services.http.rate_limits]]
from = "nobody"
path_prefix = "/v1/./x"
per_second = 0
burst = 0"#,
    );
    let p = |f: &str| format!("inbound.services[0].http.{f}");
    let want: Vec<(String, Option<usize>)> = [
        ("mode", 19),
        ("max_head_bytes", 20),
        ("max_headers", 21),
        ("request_head_timeout_ms", 22),
        ("response_timeout_ms", 23),
        ("default", 24),
        ("rules[0].action", 26),
        ("rules[0].from[0]", 27),
        ("rules[0].methods[1]", 28),
        ("rules[0].path", 29),
        ("rules[1].path_prefix", 32),
        ("rules[1].headers[0].name", 33),
        ("rules[2].path_prefix", 37),
        ("rules[3].path", 40),
        ("rate_limits[0].from", 42),
        ("rate_limits[0].path_prefix", 43),
        ("rate_limits[0].per_second", 44),
        ("rate_limits[0].burst", 45),
    ]
    .into_iter()
    .map(|(f, line)| (p(f), Some(line)))
    .collect();
    assert_eq!(field_errors(&bad), want);
    let text = parse(&bad, "h.toml").expect_err("invalid").to_string();
    for reason in [
        "\"fast\" is not a mode (splice, copy)",
        "\"block\" is not an action (allow, deny)",
        "\"get\" is not a method",
        "\"/a/../b\" is not a normalized path (it would match as \"/b\")",
        "\"/x//\" is not a normalized path (it would match as \"/x/\")",
        "give path or path_prefix, not both",
        "\"bad name\" is not a header name",
        "\"/a%2Fb\" is not a usable path",
        "0 is out of range 1..=10000000",
    ] {
        assert!(text.contains(reason), "missing {reason:?} in:\n{text}");
    }
}

#[test]
fn http_rule_and_rate_limit_required_fields_are_named() {
    let missing = with_service(
        "protocol = \"http\"\n[[inbound.services.http.rules]]\npath = \"/a\"\n[[inbound.services.http.rate_limits]]\nburst = 3",
    );
    let paths: Vec<String> = field_errors(&missing).into_iter().map(|(p, _)| p).collect();
    assert_eq!(
        paths,
        ["inbound.services[0].http.rules[0].action", "inbound.services[0].http.rate_limits[0].per_second"]
    );
}

#[test]
fn protocol_must_be_tcp_or_http_and_only_http_takes_an_http_section() {
    assert_eq!(
        field_errors(&with_service("protocol = \"udp\"")),
        [("inbound.services[0].protocol".to_owned(), Some(17))]
    );
    let text = parse(&with_service("protocol = \"udp\""), "h.toml").expect_err("udp").to_string();
    assert!(text.contains("\"udp\" is not a protocol (tcp, http)"), "{text}");
    for tcp in ["protocol = \"tcp\"\n", ""] {
        let err = parse(&with_service(&format!("{tcp}[inbound.services.http]\nmode = \"copy\"")), "h.toml")
            .expect_err("an http section on a tcp service");
        assert_eq!(err.fields.len(), 1, "{err}");
        assert_eq!(err.fields[0].path, "inbound.services[0].http", "{err}");
        assert!(err.fields[0].reason.contains("protocol = \"http\""), "{err}");
    }
    // The other services' errors are still reported alongside.
    let two = format!(
        "{}\n[[inbound.services]]\nname = \"web\"\nbackend = \"127.0.0.1:9\"\nprotocol = \"http\"\n[inbound.services.http]\ndefault = \"nope\"\n",
        with_service("protocol = \"HTTP\"")
    );
    let paths: Vec<String> = field_errors(&two).into_iter().map(|(p, _)| p).collect();
    assert_eq!(paths, ["inbound.services[0].protocol", "inbound.services[1].http.default"]);
}

#[test]
fn unknown_http_fields_are_refused() {
    let err = parse(&with_service("protocol = \"http\"\n[inbound.services.http]\nmax_body = 5"), "h.toml")
        .expect_err("unknown field");
    assert_eq!(err.fields.len(), 1, "{err}");
    assert!(err.fields[0].reason.contains("unknown field `max_body`"), "{err}");
    assert!(err.fields[0].path.ends_with("http.max_body"), "{err}");
    assert_eq!(err.fields[0].line, Some(19), "{err}");
}

/// Appended to `role = "dpu"` + `GOOD`.
const DPU: &str = r#"
[host_channel]
listen = "10.0.0.1:15010"
key_file = "/etc/weir/host-channel.key"
workloads = ["spiffe://weir.local/ns/shop/sa/cart"]
[host_channel.control]
addr = "10.0.0.1:15011"
peer_id = "spiffe://weir.local/ns/weir/sa/host"
"#;

/// A host plane's whole config.
const HOST: &str = r#"
role = "host"
trust_domain = "weir.local"
[identity]
namespace = "weir"
service_account = "host"
ca_dir = "/tmp/ca"
[kernel]
mode = "ebpf"
[[workloads]]
name = "cart"
service_account = "cart"
[[outbound]]
service = "orders"
capture = ["10.96.0.5:80"]
[dpu]
host_channel = "10.0.0.1:15010"
key_file = "/etc/weir/host-channel.key"
[dpu.control]
addr = "10.0.0.1:15011"
peer_id = "spiffe://weir.local/ns/weir/sa/dpu"
interval_secs = 2
"#;

#[test]
fn a_dpu_role_has_its_host_channel() {
    let c = parse(&format!("role = \"dpu\"\n{GOOD}{DPU}"), "dpu.toml").expect("valid dpu config");
    let Role::Dpu(h) = c.role else { panic!("role dpu expected: {:?}", c.role) };
    assert_eq!(h.listen, "10.0.0.1:15010".parse().expect("address"));
    assert_eq!(h.window, std::time::Duration::from_secs(30));
    assert_eq!(h.key_rotation, std::time::Duration::from_secs(3600), "a fresh channel key every hour");
    assert_eq!(h.workloads[0].as_str(), "spiffe://weir.local/ns/shop/sa/cart");
    assert_eq!(h.control.peer_id.as_str(), "spiffe://weir.local/ns/weir/sa/host");
    assert_eq!(h.control.interval, std::time::Duration::from_secs(5), "default state interval");
    assert_eq!(parse(GOOD, "node.toml").expect("valid").role, Role::Node, "node is the default");
    let reached_by_the_host = GOOD.replace("listen = \"127.0.0.1:15001\"\n", "");
    let c = parse(&format!("role = \"dpu\"\n{reached_by_the_host}{DPU}"), "dpu.toml")
        .expect("a dpu route needs no listener");
    assert_eq!(c.outbound[0].listen, None);
    assert_eq!(field_errors(&reached_by_the_host)[0].0, "outbound[0].listen", "a node's route does");
}

#[test]
fn roles_and_their_sections_are_checked() {
    let paths = |src: &str| field_errors(src).into_iter().map(|(p, _)| p).collect::<Vec<_>>();
    assert_eq!(paths(&format!("role = \"edge\"\n{GOOD}")), ["role"], "unknown role");
    let node_with_channel = format!("{GOOD}\n[host_channel]\nlisten = \"10.0.0.1:1\"\n");
    assert_eq!(paths(&node_with_channel), ["host_channel"], "a node has no host channel");
    assert_eq!(paths(&format!("role = \"dpu\"\n{GOOD}")), ["host_channel"], "a dpu needs one");
    let bad = r#"
[host_channel]
listen = "nowhere"
window_secs = 0
key_rotation_secs = 1
workloads = ["spiffe://other.domain/ns/a/sa/b", "not a uri"]
"#;
    let mut got = paths(&format!("role = \"dpu\"\n{GOOD}{bad}"));
    got.sort();
    assert_eq!(
        got,
        [
            "host_channel.control",
            "host_channel.key_file",
            "host_channel.key_rotation_secs",
            "host_channel.listen",
            "host_channel.window_secs",
            "host_channel.workloads[0]",
            "host_channel.workloads[1]"
        ]
    );
    let with_cgroups =
        format!("role = \"dpu\"\n{GOOD}{DPU}\n[[workloads]]\nname = \"cart\"\nservice_account = \"cart\"\n");
    assert!(paths(&with_cgroups).contains(&"workloads".to_owned()), "{:?}", paths(&with_cgroups));
}

#[test]
fn a_host_plane_captures_and_sends_everything_to_its_dpu() {
    let c = parse(HOST, "host.toml").expect("valid host config");
    let Role::Host(d) = &c.role else { panic!("role host expected: {:?}", c.role) };
    assert_eq!(d.control.interval, std::time::Duration::from_secs(2));
    let route = &c.outbound[0];
    assert_eq!(route.peer, d.host_channel, "a host plane's every route goes to the DPU's host channel");
    assert_eq!(route.peer_id, d.control.peer_id);
    assert_eq!(route.capture, ["10.96.0.5:80".parse().expect("address")]);
}

#[test]
fn a_dpu_service_may_live_on_its_host() {
    let service = "[[inbound.services]]\nname = \"cart\"\n\
                   backend = \"10.0.0.2:15012\"\nallow = [\"spiffe://weir.local/ns/a/sa/b\"]\non_host = true\n";
    let c = parse(&format!("role = \"dpu\"\n{GOOD}{DPU}{service}"), "dpu.toml").expect("valid dpu config");
    let services = c.inbound.expect("inbound").services;
    let (direct, cart) = (&services[0], services.last().expect("cart"));
    assert!(cart.on_host && !direct.on_host, "reached through the host plane's inbound listener");
    let n = services.len() - 1;
    let errors = field_errors(&format!("{GOOD}{service}"));
    let path = format!("inbound.services[{n}].on_host");
    assert!(errors.iter().any(|(p, _)| *p == path), "a node has no host: {errors:?}");
}

#[test]
fn a_host_plane_may_run_l7_routing_itself() {
    let l7 = HOST.replace(
        "capture = [\"10.96.0.5:80\"]",
        "capture = [\"10.96.0.5:80\"]\nprotocol = \"http\"\n[[outbound.http.routes]]\npath_prefix = \"/v2\"\n\
         split = [{ service = \"orders-v2\", weight = 1 }]\n[[outbound]]\nservice = \"orders-v2\"",
    );
    let c = parse(&l7, "host.toml").expect("L7 placed on the host plane");
    let Role::Host(d) = &c.role else { panic!("role host expected: {:?}", c.role) };
    let http = c.outbound[0].http.as_ref().expect("the host runs this route's L7");
    assert_eq!(http.routes[0].split, [("orders-v2".to_owned(), 1)]);
    assert_eq!(c.outbound[1].peer, d.host_channel, "a split target is reached through the DPU too");
    assert!(c.outbound[1].capture.is_empty() && c.outbound[1].http.is_none());
    let dangling = l7.replace("service = \"orders-v2\"\n", "service = \"other\"\n");
    let errors = field_errors(&dangling);
    assert!(errors.iter().any(|(p, _)| p == "outbound[0].http.routes[0].split[0].service"), "{errors:?}");
}

#[test]
fn a_host_plane_refuses_what_belongs_to_the_dpu() {
    let paths = |src: &str| {
        let mut p = field_errors(src).into_iter().map(|(p, _)| p).collect::<Vec<_>>();
        p.sort();
        p
    };
    let routed = HOST.replace(
        "capture = [\"10.96.0.5:80\"]",
        "capture = [\"10.96.0.5:80\"]\npeer = \"10.0.0.9:1\"\npeer_id = \"spiffe://weir.local/ns/a/sa/b\"\nprotocol = \"http\"",
    );
    assert_eq!(paths(&routed), ["outbound[0].peer", "outbound[0].peer_id"], "L7 may be placed on the host");
    let reached = "[[inbound.services]]\nname = \"cart\"\nbackend = \"127.0.0.1:8080\"\nallow = [\"spiffe://weir.local/ns/a/sa/b\"]\n";
    let serving = format!("{HOST}[inbound]\nlisten = \"10.0.0.2:15012\"\n{reached}");
    let c = parse(&serving, "host.toml").expect("a host plane serves what the DPU brings it");
    assert_eq!(c.inbound.expect("inbound").services[0].name, "cart");
    assert_eq!(paths(&format!("{serving}on_host = true\n")), ["inbound.services[0].on_host"], "the host is the host");
    assert_eq!(paths(&HOST.replace("mode = \"ebpf\"", "mode = \"off\"")), ["kernel.mode", "workloads"]);
    let no_control = &HOST[..HOST.find("[dpu.control]").expect("control section")];
    assert_eq!(paths(no_control), ["dpu.control"]);
    let with_channel = format!("{HOST}[host_channel]\nlisten = \"10.0.0.1:1\"\n");
    assert_eq!(paths(&with_channel), ["host_channel"]);
    let foreign_id = HOST.replace("spiffe://weir.local/ns/weir/sa/dpu", "spiffe://other.domain/ns/weir/sa/dpu");
    assert_eq!(paths(&foreign_id), ["dpu.control.peer_id"]);
}

#[test]
fn rdma_allowances_and_bootstrap_services() {
    let base = r#"
trust_domain = "weir.local"
[identity]
namespace = "hpc"
service_account = "node"
ca_dir = "/tmp/ca"
[kernel]
mode = "ebpf"
[[workloads]]
name = "trainer"
service_account = "trainer"
[workloads.rdma]
max_handles = 2
[[workloads]]
name = "web"
service_account = "web"
[inbound]
listen = "0.0.0.0:15008"
[[inbound.services]]
name = "nccl-bootstrap"
backend = "127.0.0.1:18515"
allow = ["spiffe://weir.local/ns/hpc/sa/trainer"]
rdma_bootstrap = true
workload = "trainer"
[[outbound]]
service = "nccl-bootstrap"
capture = ["10.1.0.9:18515"]
peer = "10.1.0.9:15008"
peer_id = "spiffe://weir.local/ns/hpc/sa/node"
rdma_bootstrap = true
"#;
    let c = parse(base, "rdma.toml").expect("valid");
    let allowance = RdmaAllowance { max_handles: Some(2), max_objects: None };
    assert_eq!(c.workloads[0].rdma, Some(allowance), "allowed, objects unlimited");
    assert_eq!(c.workloads[1].rdma, None, "no [workloads.rdma]: no RDMA");
    let service = &c.inbound.as_ref().expect("inbound").services[0];
    assert!(service.rdma_bootstrap && service.workload.as_deref() == Some("trainer"));
    assert!(c.outbound[0].rdma_bootstrap);
    let bad =
        base.replace("max_handles = 2", "max_handles = -1").replace("workload = \"trainer\"", "workload = \"ghost\"");
    let mut paths: Vec<_> = field_errors(&bad).into_iter().map(|(p, _)| p).collect();
    paths.sort();
    assert_eq!(paths, ["inbound.services[0].workload", "workloads[0].rdma.max_handles"]);
}

#[test]
fn identity_takes_a_local_ca_dir() {
    let c = parse(GOOD, "good.toml").expect("valid config");
    assert_eq!(c.identity.ca, CaSource::Local { dir: "/tmp/ca".into(), create_if_missing: false });
}

#[test]
fn identity_takes_a_remote_ca() {
    let remote = GOOD.replace(
        "ca_dir = \"/tmp/ca\"",
        "ca_url = \"10.77.3.1:8450\"\nca_bundle = \"/etc/weir/ca.pem\"\ntoken_file = \"/etc/weir/ca.token\"",
    );
    let c = parse(&remote, "remote.toml").expect("valid config");
    assert_eq!(
        c.identity.ca,
        CaSource::Remote {
            addr: "10.77.3.1:8450".into(),
            bundle: "/etc/weir/ca.pem".into(),
            token_file: "/etc/weir/ca.token".into()
        }
    );
    let named = remote.replace("10.77.3.1:8450", "ca.weir.internal:8450");
    assert!(parse(&named, "named.toml").is_ok(), "a host name and a port");
}

#[test]
fn identity_needs_exactly_one_ca_form_and_names_the_field() {
    let fields = |source: &str| -> Vec<(String, Option<usize>, String)> {
        let err = parse(source, "bad.toml").expect_err("invalid config");
        err.fields.into_iter().map(|f| (f.path, f.line, f.reason)).collect()
    };
    let both = GOOD.replace("ca_dir = \"/tmp/ca\"", "ca_dir = \"/tmp/ca\"\nca_url = \"10.0.0.1:8450\"");
    let got = fields(&both);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].0.as_str(), got[0].1), ("identity.ca_url", Some(8)));
    assert!(got[0].2.contains("not both"), "{got:?}");

    let neither = GOOD.replace("ca_dir = \"/tmp/ca\"\n", "");
    let got = fields(&neither);
    assert_eq!(got[0].0, "identity.ca_dir");
    assert!(got[0].2.contains("identity.ca_url"), "the message names the other form: {got:?}");

    let half = GOOD.replace("ca_dir = \"/tmp/ca\"", "ca_url = \"10.0.0.1:8450\"");
    let got: Vec<_> = fields(&half).into_iter().map(|f| f.0).collect();
    assert_eq!(got, ["identity.ca_bundle", "identity.token_file"]);

    for bad in ["http://10.0.0.1:8450", "10.0.0.1", "10.0.0.1:0", ":8450", "ca/x:8450"] {
        let source =
            GOOD.replace("ca_dir = \"/tmp/ca\"", &format!("ca_url = \"{bad}\"\nca_bundle = \"b\"\ntoken_file = \"t\""));
        let got = fields(&source);
        assert_eq!(got.len(), 1, "{bad}: {got:?}");
        assert_eq!((got[0].0.as_str(), got[0].1), ("identity.ca_url", Some(7)), "{bad}");
        assert!(got[0].2.contains("is not host:port"), "{bad}: {got:?}");
    }

    let mixed = GOOD.replace("ca_dir = \"/tmp/ca\"", "ca_dir = \"/tmp/ca\"\ntoken_file = \"t\"");
    let got = fields(&mixed);
    assert_eq!((got[0].0.as_str(), got[0].1), ("identity.token_file", Some(8)));
    assert!(got[0].2.contains("only with identity.ca_url"), "{got:?}");

    let create = GOOD.replace(
        "ca_dir = \"/tmp/ca\"",
        "ca_url = \"10.0.0.1:8450\"\nca_bundle = \"b\"\ntoken_file = \"t\"\ncreate_ca_if_missing = true",
    );
    let got = fields(&create);
    assert_eq!(got[0].0, "identity.create_ca_if_missing");

    let empty =
        GOOD.replace("ca_dir = \"/tmp/ca\"", "ca_url = \"10.0.0.1:8450\"\nca_bundle = \"\"\ntoken_file = \"t\"");
    let got = fields(&empty);
    assert_eq!((got[0].0.as_str(), got[0].2.as_str()), ("identity.ca_bundle", "empty"));
}

#[test]
fn ktls_records_per_key_defaults_under_aes_gcm_limit_and_is_bounded() {
    assert_eq!(parse(GOOD, "good.toml").expect("valid").ktls.records_per_key, 1 << 23);
    let set = format!("{GOOD}\n[ktls]\nrecords_per_key = 64\n");
    assert_eq!(parse(&set, "k.toml").expect("valid").ktls.records_per_key, 64);
    for bad in ["0", "16777217", "\"many\""] {
        let fields = field_errors(&format!("{GOOD}\n[ktls]\nrecords_per_key = {bad}\n"));
        assert!(
            fields.iter().any(|(path, line)| path == "ktls.records_per_key" && line.is_some()),
            "{bad}: {fields:?}"
        );
    }
}
