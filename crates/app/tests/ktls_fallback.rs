//! A kTLS setup failure falls back to userspace TLS, never plaintext, and says so. Runs in the
//! guest kernel (`make test-ktls`): kTLS is detected at start, then the `tls` module is
//! removed and module autoloading disabled, so attaching the ULP fails for real.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ktls_setup_failure_falls_back_to_userspace_tls() {
    let mesh = Mesh::start(Opts::new("auto")).await;
    let c = mesh.client.metrics_text();
    assert_eq!(
        metric(&c, "weir_ktls_enabled", &[]),
        1.0,
        "kTLS must be detected at start (run under make test-ktls):\n{c}"
    );
    std::fs::write("/proc/sys/kernel/modprobe", "/bin/false\n").expect("disable module autoload (root in the guest)");
    let rm = Command::new("rmmod").arg("tls").output().expect("rmmod");
    assert!(rm.status.success(), "rmmod tls: {}", String::from_utf8_lossy(&rm.stderr));
    assert!(
        !std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_ulp").unwrap_or_default().contains("tls"),
        "tls ULP gone"
    );

    echo_exact(mesh.outbound(), 2 << 20, 8).await;
    mesh.settle().await;
    let (c, s) = (mesh.client.metrics_text(), mesh.server.metrics_text());
    assert_eq!(metric(&c, "weir_ktls_fallbacks_total", &[]), 1.0, "client counted its fallback:\n{c}");
    assert_eq!(metric(&s, "weir_ktls_fallbacks_total", &[]), 1.0, "server counted its fallback:\n{s}");
    assert_eq!(
        metric(&c, "weir_connections_opened_total", &["mode=\"userspace\""]),
        1.0,
        "the connection ran on userspace TLS:\n{c}"
    );
    assert_eq!(metric(&s, "weir_connections_opened_total", &["mode=\"userspace\""]), 1.0, "{s}");
}
