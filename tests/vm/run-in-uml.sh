#!/usr/bin/env bash
# run-in-uml.sh CMD [ARGS...]: runs CMD inside a User-Mode Linux guest (Debian's linux.uml,
# CONFIG_TLS=m) whose root is this host's / (read-only, via hostfs), with the current
# directory shared read-write at the same path. Streams CMD's stdout/stderr, exits with its
# status. Usable as a cargo runner (CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUNNER).
#
# Why UML: this host's kernel has no CONFIG_TLS and its /dev/kvm cannot boot a stock kernel;
# UML boots in ~3 s and runs user code natively (kernel crypto is generic C: functional only).
# Env: VM_MEM (default 1G), VM_TIMEOUT seconds (default 900), VM_ENV (variables to forward,
# default "RUST_LOG RUST_BACKTRACE"), VM_MODULES (default "tls").
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { echo "usage: $0 CMD [ARGS...]" >&2; exit 2; }
uml=${VM_UML:-/usr/bin/linux.uml}
[ -x "$uml" ] || { echo "run-in-uml: $uml missing (make setup installs user-mode-linux)" >&2; exit 125; }

workdir=$(pwd -P)
# The guest mounts tmpfs over /tmp, /var/tmp, /root and /run, hiding host files there: share
# the project root (which holds target/), the current directory and the command's directory
# read-write at their own paths. A directory inside another shared one is not mounted twice.
shares=()
for d in "$(git rev-parse --show-toplevel 2>/dev/null || true)" "$workdir" "$(case "$1" in /*) dirname "$1";; esac)"; do
  [ -n "$d" ] && [ -d "$d" ] && shares+=("$(cd "$d" && pwd -P)")
done
run=$(mktemp -d /dev/shm/weir-uml.XXXXXX) || exit 125
trap 'rm -rf "$run"' EXIT
{
  printf 'WEIR_VM_WORKDIR=%q\n' "$workdir"
  printf 'WEIR_VM_SHARES=%q\n' "$(printf '%s\n' "${shares[@]}" | sort -u | awk 'NR==1||index($0,prev"/")!=1{print; prev=$0}' | tr '\n' ' ')"
  printf 'WEIR_VM_MODULES=%q\n' "${VM_MODULES-tls}"
} > "$run/env.sh"
{
  echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  echo 'export WEIR_IN_GUEST=uml'
  for v in ${VM_ENV:-RUST_LOG RUST_BACKTRACE}; do [ -n "${!v+x}" ] && printf 'export %s=%q\n' "$v" "${!v}"; done
  printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$run/cmd.sh"

# con0 (kernel console) -> log file on fd 3; tty1 -> our stdout; tty2 -> our stderr.
# UML backs guest memory with a file in TMPDIR: keep it on tmpfs.
TMPDIR=/dev/shm timeout -k 5 "${VM_TIMEOUT:-900}" "$uml" \
  mem="${VM_MEM:-1G}" root=/dev/root rootfstype=hostfs rootflags=/ ro quiet \
  init="$here/uml-init.sh" weirvm.ctl="$run" \
  con=null con0=null,fd:3 con1=null,fd:1 con2=null,fd:2 ssl=null \
  </dev/null 3>"$run/console.log"
uml_rc=$?
if [ -s "$run/rc" ]; then
  exit "$(cat "$run/rc")"
fi
echo "run-in-uml: no exit status from the guest (linux.uml exited $uml_rc); console tail:" >&2
tail -n 40 "$run/console.log" >&2
exit 125
