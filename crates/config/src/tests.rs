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
    assert!(c.identity.create_ca_if_missing);
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
