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

# The guest suites are built once, with lint's feature set over the whole workspace: selecting
# one package (-p) would resolve dependency features differently and rebuild between suites.
GUEST_FEATURES=weir-app/guest-tests,weir-probe/guest-tests
GUEST_TESTS=(ktls ktls_fallback ktls_guest rdma_guest)
# Guest modules: kTLS, and the AES-NI gcm(aes) the kernel's kTLS should use (no udev in the guest
# loads it; optional: a kernel without that module still runs); soft-RoCE and its verbs device.
KTLS_MODULES="tls aesni_intel?"
RDMA_MODULES="rdma_rxe ib_uverbs"
failed=()

# guest_suite KERNEL MODULES TEST: the test target TEST (rdma_guest: weir-probe's and weir-app's)
# in one qemu guest per binary booting Debian's KERNEL (6.1 or 7.2; tests/vm/run-in-vm.sh as cargo
# runner), its tests one at a time. A suite past 5 min has hung: the guest lists what it waits
# in, and the suite fails. Prints its wall time.
guest_suite() {
  local kernel=$1 modules=$2 test=$3 t0=$SECONDS kver
  kver=$(VM_KERNEL_NAME=$kernel tests/vm/run-in-vm.sh --which-kernel)
  if VM_KERNEL_NAME=$kernel VM_MODULES=$modules VM_TIMEOUT=300 \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER="$PWD/tests/vm/run-in-vm.sh" \
    $CARGO test --release --workspace --features "$GUEST_FEATURES" --test "$test" -- --test-threads=1 --color never; then
    echo "== $test on $kver: $((SECONDS - t0)) s"
  else
    echo "== $test on $kver: FAILED after $((SECONDS - t0)) s"
    failed+=("$test on $kver")
  fi
}

ktls() {
  local k t0=$SECONDS
  echo "== building the guest suites"
  $CARGO test --release --workspace --features "$GUEST_FEATURES" --no-run "${GUEST_TESTS[@]/#/--test=}"
  echo "== guest suites built: $((SECONDS - t0)) s"
  # The kTLS suites on both kernels: Debian 12's 6.1 (no TLS 1.3 rekey) and Debian unstable's 7.2
  # (rekey, since 6.14), which scripts/setup.sh fetches into target/vm.
  for k in 6.1 7.2; do
    echo "== guest-kernel suites: kTLS on Debian's $(VM_KERNEL_NAME=$k tests/vm/run-in-vm.sh --which-kernel) (qemu TCG, tests/vm/run-in-vm.sh)"
    guest_suite "$k" "$KTLS_MODULES" ktls
    guest_suite "$k" "$KTLS_MODULES" ktls_fallback
    guest_suite "$k" "$KTLS_MODULES" ktls_guest
  done
  echo "== guest-kernel suites: soft-RoCE (rdma_rxe), the rdma cgroup and RDMA through the mesh on Debian's $(tests/vm/run-in-vm.sh --which-kernel)"
  guest_suite 6.1 "$RDMA_MODULES" rdma_guest
  if [ ${#failed[@]} -gt 0 ]; then
    printf '== guest-kernel suite failed: %s\n' "${failed[@]}" >&2
    return 1
  fi
}

case "$what" in
  all) lint; host; ktls ;;
  host) host ;;
  ktls) ktls ;;
  lint) lint ;;
  *) echo "usage: $0 all|host|ktls|lint" >&2; exit 2 ;;
esac
echo "== $what: all suites passed"
