#!/bin/sh
# PID 1 of the UML guest started by run-in-uml.sh: mounts, loads kTLS, runs the command,
# hands its exit status back through the control directory, powers off.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=755 tmpfs /run
ctl=$(sed -n 's/.*weirvm.ctl=\([^ ]*\).*/\1/p' /proc/cmdline)
mkdir -p /run/weirvm
mount -t hostfs -o "$ctl" none /run/weirvm || { echo "weirvm: control mount failed" >/dev/console; echo o > /proc/sysrq-trigger; }
. /run/weirvm/env.sh
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=1777 tmpfs /var/tmp 2>/dev/null
mount -t tmpfs -o mode=700 tmpfs /root 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# Debian ships the UML kernel's modules under /usr/lib/uml/modules/<version>.
mount --bind /usr/lib/uml/modules /lib/modules
# The cgroup v2 hierarchy and bpffs, for suites that need them.
mount -t cgroup2 none /sys/fs/cgroup 2>/dev/null
for d in $WEIR_VM_SHARES; do
  mkdir -p "$d" 2>/dev/null
  mount -t hostfs -o "$d" none "$d" || echo "weirvm: cannot share $d" >&2
done
hostname weir-guest
ip link set lo up
for m in $WEIR_VM_MODULES; do modprobe -q "$m" || echo "weirvm: modprobe $m failed" >&2; done
exec 3>/dev/tty1 4>/dev/tty2
stty -F /dev/tty1 raw -echo
stty -F /dev/tty2 raw -echo
cd "$WEIR_VM_WORKDIR" || cd /
HOME=/root /bin/sh /run/weirvm/cmd.sh </dev/null >&3 2>&4
echo "$?" > /run/weirvm/rc
sync
echo o > /proc/sysrq-trigger
sleep 5
