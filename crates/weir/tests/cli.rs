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
fn demo_runs_end_to_end_and_refuses_the_impostor() {
    let o = weir(&["demo", "--requests", "200", "--connections", "4", "--large-mib", "16"]);
    let t = text(&o);
    assert!(o.status.success(), "demo failed:\n{t}");
    for want in ["Result: OK", "server answered Denied", "not_allowed=1", "mode          "] {
        assert!(t.contains(want), "demo output lacks {want:?}:\n{t}");
    }
}
