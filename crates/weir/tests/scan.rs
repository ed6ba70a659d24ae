//! `weir scan` on the real host: its JSON validates against docs/scan.schema.json, kTLS is
//! reported the way this kernel really is, and an nftables redirect made in a scratch network
//! namespace is reported as a sidecar redirect by a scan inside that namespace. Needs root.
//!
//! The schema check is a focused validator below (the keywords docs/scan.schema.json uses:
//! type, const, enum, required, properties, additionalProperties, items, oneOf, $ref, minimum,
//! maximum) rather than the jsonschema crate, whose dependency tree (regex engines, IDNA,
//! optional HTTP client) would dwarf this crate; an unsupported keyword fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use serde_json::Value;
use std::process::{Command, Output};

fn schema() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/scan.schema.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("docs/scan.schema.json")).expect("schema is JSON")
}

/// Appends to `errors` every place where `v` breaks `s`.
fn validate(root: &Value, s: &Value, v: &Value, at: &str, errors: &mut Vec<String>) {
    let Some(s) = s.as_object() else { return errors.push(format!("{at}: schema is not an object")) };
    for (k, rule) in s {
        match k.as_str() {
            "$schema" | "$id" | "title" | "description" | "$defs" => {}
            "$ref" => {
                let name = rule.as_str().and_then(|r| r.strip_prefix("#/$defs/")).expect("local $ref");
                validate(root, &root["$defs"][name], v, at, errors);
            }
            "type" => {
                let types: Vec<&str> = match rule {
                    Value::String(t) => vec![t.as_str()],
                    Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                    _ => panic!("{at}: bad type keyword"),
                };
                let ok = types.iter().any(|t| match *t {
                    "object" => v.is_object(),
                    "array" => v.is_array(),
                    "string" => v.is_string(),
                    "integer" => v.is_i64() || v.is_u64(),
                    "boolean" => v.is_boolean(),
                    "null" => v.is_null(),
                    other => panic!("{at}: type {other} not supported by this validator"),
                });
                if !ok {
                    errors.push(format!("{at}: {v} is not of type {types:?}"));
                }
            }
            "const" if v != rule => errors.push(format!("{at}: {v} != const {rule}")),
            "const" => {}
            "enum" if !rule.as_array().expect("enum array").contains(v) => {
                errors.push(format!("{at}: {v} not in {rule}"))
            }
            "enum" => {}
            "minimum" if v.as_f64().is_some_and(|x| x < rule.as_f64().expect("number")) => {
                errors.push(format!("{at}: {v} < {rule}"))
            }
            "maximum" if v.as_f64().is_some_and(|x| x > rule.as_f64().expect("number")) => {
                errors.push(format!("{at}: {v} > {rule}"))
            }
            "minimum" | "maximum" => {}
            "required" => {
                for name in rule.as_array().expect("required array").iter().filter_map(Value::as_str) {
                    if v.as_object().is_some_and(|o| !o.contains_key(name)) {
                        errors.push(format!("{at}: missing {name}"));
                    }
                }
            }
            "properties" => {
                for (name, sub) in rule.as_object().expect("properties object") {
                    if let Some(x) = v.get(name) {
                        validate(root, sub, x, &format!("{at}.{name}"), errors);
                    }
                }
            }
            "additionalProperties" => {
                assert_eq!(rule, &Value::Bool(false), "{at}: only additionalProperties: false is supported");
                let known = s.get("properties").and_then(Value::as_object);
                for name in v.as_object().into_iter().flat_map(|o| o.keys()) {
                    if !known.is_some_and(|p| p.contains_key(name)) {
                        errors.push(format!("{at}: unexpected field {name}"));
                    }
                }
            }
            "items" => {
                for (i, x) in v.as_array().into_iter().flatten().enumerate() {
                    validate(root, rule, x, &format!("{at}[{i}]"), errors);
                }
            }
            "oneOf" => {
                let passing = rule
                    .as_array()
                    .expect("oneOf array")
                    .iter()
                    .filter(|sub| {
                        let mut e = Vec::new();
                        validate(root, sub, v, at, &mut e);
                        e.is_empty()
                    })
                    .count();
                if passing != 1 {
                    errors.push(format!("{at}: {passing} oneOf branches match {v}"));
                }
            }
            other => panic!("{at}: keyword {other} not supported by this validator"),
        }
    }
}

fn schema_errors(v: &Value) -> Vec<String> {
    let root = schema();
    let mut errors = Vec::new();
    validate(&root, &root, v, "$", &mut errors);
    errors
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn scan_json(o: Output) -> Value {
    assert!(o.status.success(), "weir scan --json failed: {}", text(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&o)))
}

#[test]
fn host_scan_matches_this_kernel_and_validates_against_the_schema() {
    let v = scan_json(Command::new(env!("CARGO_BIN_EXE_weir")).args(["scan", "--json"]).output().expect("run"));
    let errors = schema_errors(&v);
    assert!(errors.is_empty(), "schema violations: {errors:#?}\n{v:#}");
    assert_eq!(v["schema"], 2);
    // This host has no RDMA core: the queue pairs are unavailable, with the reason.
    if !std::path::Path::new("/sys/class/infiniband").exists() {
        assert_eq!(v["rdma_use"]["status"], "unknown", "{}", v["rdma_use"]);
        assert!(v["rdma_use"]["reason"].as_str().is_some_and(|r| r.contains("RDMA")), "{}", v["rdma_use"]);
    }

    // What the kernel says, read independently of the probe.
    let ulps = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").expect("tcp_available_ulp");
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").expect("osrelease");
    let module_dir = std::path::Path::new("/lib/modules").join(release.trim()).join("kernel/net/tls");
    let ktls = &v["kernel"]["ktls"];
    assert_eq!(ktls["status"], "known", "{ktls}");
    if ulps.split_whitespace().any(|u| u == "tls") || module_dir.exists() {
        assert_eq!(ktls["value"]["available"], true, "{ktls}");
    } else {
        // This machine's kernel (TESTING.md: no CONFIG_TLS).
        assert_eq!(ktls["value"]["available"], false, "{ktls}");
        let reason = ktls["value"]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("CONFIG_TLS"), "the reason names the missing kernel option: {reason}");
        assert!(v["findings"].as_array().unwrap().iter().any(|f| f["kind"] == "ktls_unavailable"), "{v:#}");
        assert_eq!(v["ktls_sockets"]["value"], serde_json::json!([]), "no kTLS sockets without kTLS");
    }
    assert!(v["interfaces"]["value"].as_array().is_some_and(|i| i.iter().any(|i| i["name"] == "lo")), "{v:#}");

    // The validator is not vacuous: a broken document fails it.
    let mut broken = v.clone();
    broken["kernel"]["ktls"]["status"] = "maybe".into();
    broken["tls_stat"] = serde_json::json!({"status": "known", "value": [{"name": "x", "value": -1}]});
    broken["extra"] = Value::Bool(true);
    assert_eq!(schema_errors(&broken).len(), 3, "{:#?}", schema_errors(&broken));
}

#[test]
fn human_output_has_every_section() {
    let o = Command::new(env!("CARGO_BIN_EXE_weir")).arg("scan").output().expect("run");
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for section in ["KERNEL", "INTERFACES", "kTLS SOCKETS", "TLS_STAT", "RDMA", "SIDECAR SIGNS", "VERDICT"] {
        assert!(t.contains(section), "no {section} section:\n{t}");
    }
}

/// A network namespace that is deleted when the test ends, passed or failed.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Self {
        let name = format!("weir-{tag}-{}", std::process::id());
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let o = Command::new("ip").args(["netns", "add", &name]).output().expect("ip netns add");
        assert!(o.status.success(), "ip netns add {name} (root needed): {}", text(&o));
        Self(name)
    }

    fn exec(&self, args: &[&str]) -> Output {
        Command::new("ip").args(["netns", "exec", &self.0]).args(args).output().expect("ip netns exec")
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

#[test]
fn nft_redirect_in_a_namespace_is_reported_as_a_sidecar_redirect() {
    let ns = Netns::new("scan");
    for rule in [
        "add table ip nat",
        "add chain ip nat output { type nat hook output priority -100; }",
        "add rule ip nat output tcp dport 80 redirect to :15001",
    ] {
        let o = ns.exec(&["nft", rule]);
        assert!(o.status.success(), "nft {rule}: {}", text(&o));
    }
    let v = scan_json(ns.exec(&[env!("CARGO_BIN_EXE_weir"), "scan", "--json"]));
    let errors = schema_errors(&v);
    assert!(errors.is_empty(), "schema violations: {errors:#?}");
    let nft = &v["sidecar"]["nft"];
    assert_eq!(nft["status"], "known", "{nft}");
    let redirects = nft["value"].as_array().expect("list");
    assert!(
        redirects.iter().any(|r| r["action"] == "redirect" && r["to_port"] == 15001 && r["table"] == "ip nat"),
        "redirect to :15001 expected in {nft:#}"
    );
    let findings = v["findings"].as_array().expect("findings");
    assert!(
        findings.iter().any(|f| f["kind"] == "sidecar_redirect"
            && f["subject"].as_str().is_some_and(|s| s.contains(":15001"))
            && f["weir"].as_str().is_some_and(|w| w.contains("eBPF"))),
        "sidecar_redirect finding expected: {findings:#?}"
    );
    let human = ns.exec(&[env!("CARGO_BIN_EXE_weir"), "scan"]);
    assert!(text(&human).contains("tcp dport 80 redirect to :15001"), "{}", text(&human));

    // Outside the namespace the host's ruleset has no such rule.
    let host = scan_json(Command::new(env!("CARGO_BIN_EXE_weir")).args(["scan", "--json"]).output().expect("run"));
    let host_nft = host["sidecar"]["nft"]["value"].as_array().cloned().unwrap_or_default();
    assert!(!host_nft.iter().any(|r| r["to_port"] == 15001), "the namespace's rule leaked to the host: {host_nft:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_asks_a_running_node_for_what_only_it_knows() {
    let scan = |admin: String| async move {
        let args = ["scan".to_owned(), "--json".to_owned(), "--admin".to_owned(), admin];
        let out = tokio::task::spawn_blocking(move || Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output())
            .await
            .unwrap()
            .expect("run");
        let v = scan_json(out);
        let errors = schema_errors(&v);
        assert!(errors.is_empty(), "schema violations: {errors:#?}\n{v:#}");
        v["findings"].as_array().unwrap().iter().map(|f| f["kind"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
    };
    let unreachable = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    assert!(scan(unreachable).await.contains(&"node_unreachable".to_owned()), "a node that cannot be asked is said");

    // A node with RDMA settings answers /rdma; this host has no queue pairs, so nothing is flagged.
    let dir = tempfile::tempdir().unwrap();
    let cfg = format!(
        "trust_domain = \"weir.local\"\n[identity]\nnamespace = \"test\"\nservice_account = \"node\"\nca_dir = \"{}\"\ncreate_ca_if_missing = true\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n[ktls]\nmode = \"off\"\n[inbound]\nlisten = \"127.0.0.1:0\"\n\
         [[inbound.services]]\nname = \"bootstrap\"\nbackend = \"127.0.0.1:9\"\nrdma_bootstrap = true\n",
        dir.path().join("ca").display()
    );
    let node = weir_app::Node::start(weir_config::parse(&cfg, "rdma.toml").unwrap()).await.expect("node");
    let kinds = scan(node.admin_addr().to_string()).await;
    assert!(!kinds.iter().any(|k| k == "node_unreachable" || k == "rdma_unauthorized_qp"), "{kinds:?}");
}
