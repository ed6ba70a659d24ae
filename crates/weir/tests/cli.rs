//! The `weir` binary as a user runs it: exit codes, messages, files, and the demo end to end.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

fn weir(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(args).output().expect("run weir")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[test]
fn version_prints_the_crate_version() {
    let o = weir(&["version"]);
    assert!(o.status.success());
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), format!("weir {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn bad_config_exits_64_naming_every_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "trust_domain = \"Weir\"\n[identity]\nnamespace = \"a\"\nservice_account = \"b\"\nca_dir = \"/x\"\n[admin]\nlisten = \"nope\"\n[[outbound]]\nlisten = \"127.0.0.1:1\"\nservice = \"echo\"\npeer = \"127.0.0.1:2\"\npeer_id = \"spiffe://x\"\n",
    )
    .unwrap();
    for args in [vec!["check-config", bad.to_str().unwrap()], vec!["run", "--config", bad.to_str().unwrap()]] {
        let o = weir(&args);
        assert_eq!(o.status.code(), Some(64), "{args:?}: {}", text(&o));
        let t = text(&o);
        for want in ["bad.toml:1: trust_domain", "bad.toml:7: admin.listen", "bad.toml:12: outbound[0].peer_id"] {
            assert!(t.contains(want), "{args:?} output lacks {want:?}:\n{t}");
        }
    }
}

#[test]
fn bad_telemetry_settings_name_their_field() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("t.toml");
    let text_of = format!(
        "{}\n[telemetry]\notlp_endpoint = \"grpc://collector\"\ntcp_sample_interval_ms = 5\n",
        weir_config::DEFAULT
    );
    std::fs::write(&f, text_of).unwrap();
    let o = weir(&["check-config", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(64), "{}", text(&o));
    for want in ["telemetry.otlp_endpoint", "not an http:// or https:// URL", "telemetry.tcp_sample_interval_ms"] {
        assert!(text(&o).contains(want), "{want:?} missing:\n{}", text(&o));
    }
}

#[test]
fn top_reads_a_running_nodes_connection_table() {
    let dir = tempfile::tempdir().unwrap();
    let port = |_| std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (admin, inbound) = (port(0), port(1));
    let config = weir_config::DEFAULT
        .replace("/var/lib/weir/ca", &dir.path().join("ca").display().to_string())
        .replace("127.0.0.1:15000", &format!("127.0.0.1:{admin}"))
        .replace("0.0.0.0:15008", &format!("127.0.0.1:{inbound}"));
    let f = dir.path().join("node.toml");
    std::fs::write(&f, config).unwrap();
    let mut node =
        Command::new(env!("CARGO_BIN_EXE_weir")).args(["run", "--config", f.to_str().unwrap()]).spawn().unwrap();
    let admin = format!("127.0.0.1:{admin}");
    let mut o = weir(&["top", "--once", "--admin", &admin]);
    for _ in 0..100 {
        if o.status.success() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        o = weir(&["top", "--once", "--admin", &admin]);
    }
    let _ = node.kill();
    let _ = node.wait();
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("0 open mesh connections") && text(&o).contains("RETR"), "{}", text(&o));
    let down = weir(&["top", "--once", "--admin", &admin]);
    assert!(!down.status.success() && text(&down).contains("connecting to the admin endpoint"), "{}", text(&down));
}

#[test]
fn check_config_accepts_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("default.toml");
    std::fs::write(&f, weir_config::DEFAULT).unwrap();
    let o = weir(&["check-config", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("spiffe://weir.local/ns/default/sa/weir-node"), "{}", text(&o));
}

#[test]
fn ca_init_issue_show() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    let ca_s = ca.to_str().unwrap();
    assert!(weir(&["ca", "init", "--dir", ca_s, "--trust-domain", "mesh.test"]).status.success());
    let key_mode = std::fs::metadata(ca.join("ca.key")).unwrap().permissions().mode() & 0o777;
    assert_eq!(key_mode, 0o600, "CA key is private");
    let again = weir(&["ca", "init", "--dir", ca_s]);
    assert!(!again.status.success(), "re-init must refuse to overwrite the root");

    let (cert, key) = (dir.path().join("svid.pem"), dir.path().join("svid.key"));
    let o = weir(&[
        "ca",
        "issue",
        "--dir",
        ca_s,
        "--id",
        "spiffe://mesh.test/ns/prod/sa/api",
        "--ttl-secs",
        "120",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let svid = weir_identity::Svid::from_pem(&std::fs::read(&cert).unwrap(), &std::fs::read(&key).unwrap()).unwrap();
    assert_eq!(svid.id.as_str(), "spiffe://mesh.test/ns/prod/sa/api");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);

    let foreign = weir(&[
        "ca",
        "issue",
        "--dir",
        ca_s,
        "--id",
        "spiffe://other.test/ns/prod/sa/api",
        "--cert",
        cert.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
    ]);
    assert!(!foreign.status.success(), "an ID outside the CA's trust domain is refused");

    let show = weir(&["ca", "show", "--dir", ca_s]);
    assert!(
        text(&show).contains("trust domain: mesh.test") && text(&show).contains("BEGIN CERTIFICATE"),
        "{}",
        text(&show)
    );
}

#[test]
fn ca_serve_refuses_a_short_token_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");
    assert!(weir(&["ca", "init", "--dir", ca.to_str().unwrap()]).status.success());
    std::fs::write(dir.path().join("dpu.token"), "too-short\n").unwrap();
    let clients = dir.path().join("clients.toml");
    std::fs::write(
        &clients,
        "[[clients]]\nname = \"dpu0\"\ntoken_file = \"dpu.token\"\nids = [\"spiffe://weir.local/ns/dpu/*\"]\n",
    )
    .unwrap();
    let out = weir(&[
        "ca",
        "serve",
        "--dir",
        ca.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--clients",
        clients.to_str().unwrap(),
    ]);
    assert!(!out.status.success(), "refused to start");
    let said = text(&out);
    assert!(said.contains("clients[0].token_file") && said.contains("dpu.token: the token is 9 characters"), "{said}");
}

#[test]
fn demo_runs_end_to_end_and_refuses_the_impostor() {
    let o = weir(&["demo", "--requests", "200", "--connections", "4", "--large-mib", "16"]);
    let t = text(&o);
    assert!(o.status.success(), "demo failed:\n{t}");
    for want in ["Result: OK", "server answered Denied", "not_allowed=1", "mode          "] {
        assert!(t.contains(want), "demo output lacks {want:?}:\n{t}");
    }
}
