#!/bin/sh
# PID 1 of the qemu guest started by run-in-vm.sh, in two stages.
#   stage 1 (no argument): /init of the busybox initramfs. Loads the virtio and 9p modules,
#     mounts the host's / read-only, the shared directories read-write, the booted kernel's
#     modules over /lib/modules when they are not the host's (7.2: target/vm/kernel-<kver>),
#     the kernel filesystems, brings lo up, switch_roots.
#   stage 2 ("stage2"): the same file run by the host's /bin/sh from the host root. Loads
#     VM_MODULES (a name ending in ? only where the kernel has it), runs the command with its
#     output on the virtio-serial ports (under a watchdog of VM_TIMEOUT seconds), hands the exit
#     status back through the control share, powers off.
# Both stages read the control share's env.sh (written by run-in-vm.sh).
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
ctl=/run/weirvm

# No way to report but the console; sysrq power-off makes qemu exit (-no-reboot) at once.
fail() {
  echo "weirvm: $*" >/dev/console
  echo o >/proc/sysrq-trigger
  sleep 10
}

stage1() {
  mount -t proc proc /proc
  mount -t sysfs sysfs /sys
  mount -t devtmpfs devtmpfs /dev
  exec </dev/console >/dev/console 2>&1
  read -r t_init _ </proc/uptime
  for m in $(cat /modules.list); do insmod "/modules/$m" || echo "weirvm: insmod $m failed" >/dev/console; done
  # Large messages: the test binaries (tens of MB) are read over 9p.
  o=trans=virtio,version=9p2000.L,msize=524288
  mount -t 9p -o "$o,ro,cache=loose" weirroot /newroot || fail "cannot mount the host root"
  mount -t tmpfs -o mode=755 tmpfs /newroot/run || fail "tmpfs /run"
  mkdir -p /newroot$ctl
  mount -t 9p -o "$o,cache=none" weirctl /newroot$ctl || fail "cannot mount the control share"
  . /newroot$ctl/env.sh
  echo "$t_init" >/newroot$ctl/t_init
  # The host's /tmp and friends are not the guest's business: fresh tmpfs over them.
  mount -t tmpfs -o mode=1777 tmpfs /newroot/tmp
  mount -t tmpfs -o mode=1777 tmpfs /newroot/var/tmp
  mount -t tmpfs -o mode=700 tmpfs /newroot/root
  i=0
  for d in $WEIR_VM_SHARES; do
    # A share under /tmp or /root now lies on the fresh tmpfs: make its mount point there.
    mkdir -p "/newroot$d" 2>/dev/null
    mount -t 9p -o "$o,cache=none" "weirshare$i" "/newroot$d" || fail "cannot share $d"
    i=$((i + 1))
  done
  # A kernel other than the host's Debian 6.1 brings its own modules tree (inside a share): the
  # guest's modprobe, and the kernel's request_module(), find them at /lib/modules.
  if [ -n "${WEIR_VM_MODULES_ROOT:-}" ]; then
    mount -o bind "/newroot$WEIR_VM_MODULES_ROOT/lib/modules" /newroot/lib/modules ||
      fail "cannot mount $WEIR_VM_MODULES_ROOT/lib/modules over /lib/modules"
  fi
  # The kernel filesystems for the new root, mounted here by the static busybox: the host's
  # mount is linked to half a dozen libraries, each read over 9p under emulation.
  mount -t proc proc /newroot/proc
  mount -t sysfs sysfs /newroot/sys
  mount -t devtmpfs devtmpfs /newroot/dev
  mkdir -p /newroot/dev/pts /newroot/dev/shm
  mount -t devpts devpts /newroot/dev/pts
  mount -t tmpfs -o mode=1777 tmpfs /newroot/dev/shm
  ln -s /proc/self/fd /newroot/dev/fd
  # The cgroup v2 hierarchy, for suites that need it (rdma controller).
  mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
  # bpffs, for the kernel path's pinned maps (the RDMA suite runs Weir's workloads).
  mount -t bpf bpf /newroot/sys/fs/bpf
  hostname weir-guest
  ip link set lo up
  exec switch_root /newroot /bin/sh "$WEIR_VM_INIT" stage2
}

# The virtio-serial port qemu named $1 (no udev here: look it up in sysfs).
port() {
  for p in /sys/class/virtio-ports/*; do
    [ "$(cat "$p/name" 2>/dev/null)" = "$1" ] && { echo "/dev/${p##*/}"; return; }
  done
  echo /dev/console
}

stage2() {
  . $ctl/env.sh
  read -r up _ </proc/uptime
  echo "$up" >$ctl/t_root
  # A module that fails to load is said on the command's stderr (the console is only shown when
  # the guest fails); an optional one (name?) the kernel does not have is left out quietly.
  failed=
  set -f
  for m in $WEIR_VM_MODULES; do
    case $m in
      *\?) m=${m%\?}; modprobe -q -n "$m" 2>/dev/null || continue ;;
    esac
    modprobe -q "$m" 2>/dev/null || failed="$failed $m"
  done
  set +f
  read -r up _ </proc/uptime
  echo "$up" >$ctl/t_ready
  cd "$WEIR_VM_WORKDIR" || cd /
  # A virtio port opens once: the command and the watchdog share these descriptors.
  exec 3>"$(port weir.stdout)" 4>"$(port weir.stderr)"
  [ -z "$failed" ] || echo "weirvm: modprobe failed in kernel $(uname -r):$failed" >&4
  HOME=/root /bin/sh $ctl/cmd.sh </dev/null >&3 2>&4 &
  cmd=$!
  # The watchdog says what hung before it kills it: a bare timeout would say nothing.
  (
    sleep "${WEIR_VM_CMD_TIMEOUT:-900}"
    echo "weirvm: the command ran past ${WEIR_VM_CMD_TIMEOUT:-900}s; its processes, then the kernel log's tail (kernel threads left out):"
    ps -L --ppid 2 -p 2 --deselect -o pid,lwp,ppid,stat,wchan:28,etime,args
    dmesg | tail -n 40
    kill -KILL "$cmd"
  ) </dev/null >&4 2>&4 3>&- &
  watchdog=$!
  wait "$cmd"
  rc=$?
  kill "$watchdog" 2>/dev/null
  exec 3>&- 4>&-
  read -r up _ </proc/uptime
  echo "$up" >$ctl/t_done
  echo "$rc" >$ctl/rc
  sync
  echo o >/proc/sysrq-trigger
  sleep 10
}

case "${1:-}" in
  stage2) stage2 ;;
  *) stage1 ;;
esac
