#!/usr/bin/env bash
# Runs Weir's test suites. `all` = lint + host + ktls. Every suite that needs root, tcpdump or
# a guest kernel runs for real; if it cannot, it fails with the reason (never skips).
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-all}
CARGO=${CARGO:-cargo}

[ "$(id -u)" = 0 ] || { echo "test.sh: the suites need root (network capture, guest kernel)" >&2; exit 1; }

lint() {
  echo "== lint: rustfmt, clippy -D warnings"
  $CARGO fmt --all --check
  $CARGO clippy --release --workspace --all-targets --features weir-app/guest-tests,weir-probe/guest-tests -- -D warnings
}

host() {
  echo "== unit and host-kernel suites (userspace TLS, loopback capture, CLI, demo, a quick bench run writing its report)"
  $CARGO test --release --workspace
}

ktls() {
  echo "== guest-kernel suites: kTLS in User-Mode Linux (tests/vm/run-in-uml.sh)"
  # Each test binary boots one guest; tests inside run one at a time (1 vCPU).
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tests/vm/run-in-uml.sh" \
    $CARGO test --release -p weir-app --features guest-tests --test ktls --test ktls_fallback -- --test-threads=1 --color never
  CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tests/vm/run-in-uml.sh" \
    $CARGO test --release -p weir-probe --features guest-tests --test ktls_guest -- --test-threads=1 --color never
  echo "== guest-kernel suites: soft-RoCE (rdma_rxe), the rdma cgroup and RDMA through the mesh in a qemu guest (tests/vm/run-in-vm.sh)"
  # A full Debian kernel under TCG, since UML has no RDMA: boot ~10 s, each suite 5-20 s more.
  # A suite past 5 min has hung: the guest lists what it waits in, and the suite fails.
  VM_TIMEOUT=300 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tests/vm/run-in-vm.sh" \
    $CARGO test --release -p weir-probe --features guest-tests --test rdma_guest -- --test-threads=1 --color never
  VM_TIMEOUT=300 CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tests/vm/run-in-vm.sh" \
    $CARGO test --release -p weir-app --features guest-tests --test rdma_guest -- --test-threads=1 --color never
}

case "$what" in
  all) lint; host; ktls ;;
  host) host ;;
  ktls) ktls ;;
  lint) lint ;;
  *) echo "usage: $0 all|host|ktls|lint" >&2; exit 2 ;;
esac
echo "== $what: all suites passed"
