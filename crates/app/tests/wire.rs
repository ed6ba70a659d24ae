//! Plaintext never on the inter-node leg (host kernel, userspace TLS), proven with tcpdump.
//! Needs root and tcpdump: in `make test` both are there; a missing one fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_on_the_inter_node_leg_in_userspace_mode() {
    common::cases::plaintext_never_on_the_wire("off", "userspace").await;
}
