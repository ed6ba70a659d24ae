#!/usr/bin/env bash
# run-in-vm.sh CMD [ARGS...]: runs CMD inside a qemu guest booting a Debian kernel, whose root is
# this host's / (read-only, 9p), with the project root, the current directory and CMD's
# directory shared read-write at their own paths. Streams CMD's stdout/stderr, exits with its
# status (125 when the guest itself failed). Usable as a cargo runner
# (CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER): every guest suite runs under it.
#
# Two kernels: Debian 12's 6.1 (linux-image-amd64: /boot, modules in /lib/modules) and Debian
# unstable's 7.2 that scripts/setup.sh unpacks in target/vm/kernel-<kver>/ (boot/vmlinuz-<kver>,
# lib/modules/<kver>, mounted over the guest's /lib/modules). Why TCG: this host's /dev/kvm is
# PVM and cannot run a stock kernel at a usable speed (TESTING.md); TCG is 30-100x slower than
# native: functional only.
#
# Env: VM_KERNEL_NAME (6.1, the default, or 7.2: the newest such kernel in /boot or unpacked by
# setup), VM_KERNEL (a vmlinuz path instead), VM_MODULES_DIR (the root holding its
# lib/modules/<kver>; default: the kernel's boot/.. when that holds it, else /), VM_MEM (1G),
# VM_CPUS (2), VM_TIMEOUT seconds for CMD (900: then the guest lists its processes and kernel log
# tail on stderr, and CMD is killed), VM_BOOT_TIMEOUT seconds from qemu's start to CMD's (120),
# VM_BOOT_TRIES (3: a guest that did not get to CMD is booted again; CMD itself never runs
# twice), VM_MODULES modprobe'd before CMD (default "rdma_rxe ib_uverbs"; a name ending in ? is
# optional: skipped where the kernel has no such module), VM_ENV (variables to forward, default
# "RUST_LOG RUST_BACKTRACE"), VM_CACHE (vmlinux/initramfs cache, default <project>/target/vm),
# VM_TIMING=1 (boot and wall times on stderr), VM_KEEP=1 (keep the run dir: console log).
# `run-in-vm.sh --which-kernel` prints the kernel version it would boot (fails as a run would).
# The guest's environment has WEIR_IN_GUEST=qemu and WEIR_GUEST_KERNEL=<major.minor> of the
# kernel it booted (6.1, 7.2).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd -P)
project=$(cd "$here/../.." && pwd -P)
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
die() { echo "run-in-vm: $*" >&2; exit 125; }
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing (scripts/setup.sh installs qemu-system-x86)"
[ -x /bin/busybox ] || die "/bin/busybox missing (scripts/setup.sh installs busybox-static)"

# The kernel: a Debian image, never the running kernel (this host's own has no modules for a
# guest). Candidates: /boot (modules in /lib/modules) and the trees scripts/setup.sh unpacked.
kernel=${VM_KERNEL:-}
if [ -z "$kernel" ]; then
  name=${VM_KERNEL_NAME:-6.1}
  while read -r v k; do
    case $v in "$name".*) ;; *) continue ;; esac
    [ "$v" != "$(uname -r)" ] || continue
    case $k in
      /boot/*) [ -d "/lib/modules/$v/kernel" ] || continue ;;
      *) [ -s "${k%/boot/*}/.complete" ] || continue ;;
    esac
    kernel=$k
    break
  done < <(for k in /boot/vmlinuz-* "$project"/target/vm/kernel-*/boot/vmlinuz-*; do
    [ -e "$k" ] && echo "${k##*/vmlinuz-} $k"
  done | sort -rV)
  [ -n "$kernel" ] || case $name in
    6.1) die "no Debian 6.1 kernel with modules in /boot (scripts/setup.sh installs linux-image-amd64)" ;;
    7.2) die "no Debian 7.2 kernel unpacked in $project/target/vm (scripts/setup.sh fetches it)" ;;
    *) die "no kernel $name.* in /boot or $project/target/vm (VM_KERNEL_NAME is 6.1 or 7.2)" ;;
  esac
fi
[ -r "$kernel" ] || die "cannot read the kernel $kernel"
kver=${kernel##*/vmlinuz-}
[ "$kver" != "$kernel" ] || die "VM_KERNEL=$kernel is not named vmlinuz-<version>"
guest_kernel=$(echo "$kver" | sed -E 's/^([0-9]+\.[0-9]+).*/\1/')
kernel_root=$(cd "$(dirname "$kernel")/.." && pwd -P)
modroot=${VM_MODULES_DIR:-}
if [ -z "$modroot" ]; then
  modroot=/
  [ -d "$kernel_root/lib/modules/$kver/kernel" ] && modroot=$kernel_root
fi
modroot=$(cd "$modroot" && pwd -P) || die "VM_MODULES_DIR=$modroot is not a directory"
[ -d "$modroot/lib/modules/$kver" ] || die "no $modroot/lib/modules/$kver for the kernel $kernel"
[ "$1" = --which-kernel ] && { echo "$kver"; exit 0; }
cache=${VM_CACHE:-$project/target/vm}
mkdir -p "$cache" || die "cannot create $cache"

# PVH direct boot of the uncompressed vmlinux (Debian: CONFIG_PVH=y) skips the BIOS real-mode
# setup and the decompressor, seconds under TCG. The bzImage's payload is xz (6.1) or zstd (7.2):
# find the magic. Else the bzImage itself boots.
boot=$cache/vmlinux-$kver
if [ ! -s "$boot" ]; then
  for z in $'\xfd7zXZ:xz' $'\x28\xb5\x2f\xfd:zstd'; do
    off=$(LC_ALL=C grep -abo "${z%:*}" "$kernel" | head -1 | cut -d: -f1)
    # The decompressor complains about the bytes after its stream: what counts is an ELF with a
    # PVH note.
    [ -n "$off" ] && command -v "${z##*:}" >/dev/null &&
      tail -c +$((off + 1)) "$kernel" | "${z##*:}" -dc >"$boot.$$" 2>/dev/null
    if readelf -n "$boot.$$" 2>/dev/null | grep -q Xen; then mv "$boot.$$" "$boot"; break; fi
    rm -f "$boot.$$"
  done
  [ -s "$boot" ] || boot=$kernel
fi

# The initramfs: busybox, the modules needed to reach the host root, vm-init.sh as /init.
# Rebuilt when the kernel, its modules or vm-init.sh change (the key is in the name).
key=$({ cat "$here/vm-init.sh" /bin/busybox; echo "$modroot"; } | sha256sum | cut -c1-12)
initrd=$cache/initramfs-$kver-$key.cpio.gz
if [ ! -s "$initrd" ]; then
  tree=$(mktemp -d "$cache/initramfs.XXXXXX") || die "mktemp"
  mkdir -p "$tree"/{bin,dev,proc,sys,newroot,modules}
  cp /bin/busybox "$tree/bin/"
  for a in sh mount mkdir insmod switch_root cat echo sleep hostname ip ln; do ln -s busybox "$tree/bin/$a"; done
  cp "$here/vm-init.sh" "$tree/init"
  # Load order, dependencies first, from the host's kmod for the guest's kernel and its modules
  # tree; built-in drivers (7.2 has virtio_pci and virtio_console in the image) need no insmod.
  deps=$(modprobe -d "$modroot" -S "$kver" --show-depends -a virtio_pci virtio_console virtio_rng 9pnet_virtio 9p) ||
    { rm -rf "$tree"; die "modprobe finds no virtio/9p modules for $kver in $modroot/lib/modules"; }
  # busybox insmod takes plain .ko: compressed ones (7.2's .ko.xz) are unpacked here.
  for m in $(echo "$deps" | awk '$1 == "insmod" && !seen[$2]++ { print $2 }'); do
    b=${m##*/}
    case $b in
      *.ko.xz) xz -dc "$m" >"$tree/modules/${b%.xz}" ;;
      *.ko.zst) zstd -qdc "$m" >"$tree/modules/${b%.zst}" ;;
      *.ko.gz) gzip -dc "$m" >"$tree/modules/${b%.gz}" ;;
      *) cp "$m" "$tree/modules/" ;;
    esac || { rm -rf "$tree"; die "cannot copy $m into the initramfs"; }
    echo "${b%.ko*}.ko"
  done >"$tree/modules.list"
  (cd "$tree" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) >"$initrd.$$" && mv "$initrd.$$" "$initrd"
  rm -rf "$tree"
  [ -s "$initrd" ] || die "initramfs build failed"
fi

# The shares: a directory inside another shared one is not shared twice. A modules tree other
# than the host's is shared too (the project's target/vm already is).
workdir=$(pwd -P)
shares=$(for d in "$project" "$workdir" "$(case "$1" in /*) dirname "$1" ;; esac)" "$([ "$modroot" = / ] || echo "$modroot")"; do
  [ -n "$d" ] && [ -d "$d" ] && (cd "$d" && pwd -P)
done | sort -u | awk 'NR == 1 || index($0, prev "/") != 1 { print; prev = $0 }')

boot_timeout=${VM_BOOT_TIMEOUT:-120}
cmd_timeout=${VM_TIMEOUT:-900}
run=$(mktemp -d "${TMPDIR:-/tmp}/weir-vm.XXXXXX") || die "mktemp"
qpid=
cleanup() {
  [ -n "$qpid" ] && kill "$qpid" 2>/dev/null
  if [ "${VM_KEEP:-0}" = 1 ]; then echo "run-in-vm: kept $run" >&2; else rm -rf "$run"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir "$run/ctl"
{
  printf 'WEIR_VM_INIT=%q\n' "$here/vm-init.sh"
  printf 'WEIR_VM_WORKDIR=%q\n' "$workdir"
  printf 'WEIR_VM_SHARES=%q\n' "${shares//$'\n'/ }"
  printf 'WEIR_VM_MODULES=%q\n' "${VM_MODULES-rdma_rxe ib_uverbs}"
  # Mounted over the guest's /lib/modules (empty: the host's own /lib/modules serves).
  printf 'WEIR_VM_MODULES_ROOT=%q\n' "$([ "$modroot" = / ] || echo "$modroot")"
  printf 'WEIR_VM_CMD_TIMEOUT=%q\n' "$cmd_timeout"
} >"$run/ctl/env.sh"
{
  echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  for v in ${VM_ENV:-RUST_LOG RUST_BACKTRACE}; do [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"; done
  # After the forwarded ones: these say what the guest is, whatever the caller's environment says.
  echo 'export WEIR_IN_GUEST=qemu'
  printf 'export WEIR_GUEST_KERNEL=%q\n' "$guest_kernel"
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} >"$run/ctl/cmd.sh"

share_args=()
i=0
for d in $shares; do
  share_args+=(-fsdev "local,id=share$i,path=$d,security_model=none,multidevs=remap"
    -device "virtio-9p-pci,fsdev=share$i,mount_tag=weirshare$i")
  i=$((i + 1))
done

# One boot of the guest; the command's output streams through virtio-serial ports written to
# fifos that we copy out as they come. Sets qrc (qemu's exit status, 124 on the overall limit)
# and booted (1 once the guest reached the command).
boot_once() {
  rm -f "$run"/ctl/t_* "$run/ctl/rc" "$run/out" "$run/err" "$run/console.log"
  mkfifo "$run/out" "$run/err"
  cat "$run/out" & cout=$!
  cat "$run/err" >&2 & cerr=$!
  # The whole run's limit: the boot, the command's own limit (enforced in the guest, which
  # reports what hung), and time to report it.
  timeout -k 5 "$((boot_timeout + cmd_timeout + 60))" qemu-system-x86_64 \
    -accel tcg,thread=multi,tb-size=256 -cpu max -machine q35 \
    -m "${VM_MEM:-1G}" -smp "${VM_CPUS:-2}" \
    -nodefaults -no-user-config -display none -no-reboot \
    -kernel "$boot" -initrd "$initrd" \
    -append "console=ttyS0 loglevel=4 panic=-1 rdinit=/init" \
    -serial "file:$run/console.log" \
    -fsdev local,id=root,path=/,security_model=none,readonly=on,multidevs=remap \
    -device virtio-9p-pci,fsdev=root,mount_tag=weirroot \
    -fsdev "local,id=ctl,path=$run/ctl,security_model=none" \
    -device virtio-9p-pci,fsdev=ctl,mount_tag=weirctl \
    "${share_args[@]}" \
    -device virtio-serial-pci \
    -chardev "file,id=out,path=$run/out" -device virtserialport,chardev=out,name=weir.stdout \
    -chardev "file,id=err,path=$run/err" -device virtserialport,chardev=err,name=weir.stderr \
    -device virtio-rng-pci \
    </dev/null >"$run/qemu.log" 2>&1 &
  qpid=$!
  # Boot watchdog: a guest that has not reached the command in boot_timeout seconds (it
  # takes 5-10 s) is stuck in the kernel or the init script, never in the test: end it.
  local deadline=$((SECONDS + boot_timeout))
  while kill -0 "$qpid" 2>/dev/null && [ ! -e "$run/ctl/t_ready" ]; do
    [ "$SECONDS" -ge "$deadline" ] && { kill "$qpid" 2>/dev/null; break; }
    sleep 0.2
  done
  wait "$qpid"
  qrc=$?
  qpid=
  booted=0
  [ -e "$run/ctl/t_ready" ] && booted=1
  # If qemu died before opening the fifos, the readers still wait in open(): a read-write
  # open never blocks, and closing it gives them their EOF.
  exec 3<>"$run/out" 4<>"$run/err"
  exec 3>&- 4>&-
  wait "$cout" "$cerr" 2>/dev/null
}

tries=${VM_BOOT_TRIES:-3}
t0=$(date +%s.%N)
for try in $(seq 1 "$tries"); do
  boot_once
  [ "$booted" = 1 ] && break
  echo "run-in-vm: the guest did not reach the command within ${boot_timeout}s (boot $try of $tries, qemu exited $qrc); console tail:" >&2
  tail -n 20 "$run/console.log" >&2
done
t1=$(date +%s.%N)
if [ "${VM_TIMING:-0}" = 1 ]; then
  t() { cat "$run/ctl/t_$1" 2>/dev/null || echo '?'; }
  printf 'run-in-vm: kernel %s, wall %.1fs; guest uptime: initramfs %ss, host root %ss, modules loaded (ready) %ss, command done %ss\n' \
    "$kver" "$(echo "$t1 - $t0" | bc)" "$(t init)" "$(t root)" "$(t ready)" "$(t "done")" >&2
fi
if [ -s "$run/ctl/rc" ]; then
  exit "$(cat "$run/ctl/rc")"
fi
[ "$qrc" = 124 ] && echo "run-in-vm: timed out after $((boot_timeout + cmd_timeout + 60))s" >&2
echo "run-in-vm: no exit status from the guest (qemu exited $qrc); qemu log and console tail:" >&2
cat "$run/qemu.log" >&2
tail -n 40 "$run/console.log" >&2
exit 125
