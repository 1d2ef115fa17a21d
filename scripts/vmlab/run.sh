#!/bin/bash
# run.sh SCENARIO [--lunbridge PATH] [--port N] [--param KEY=VALUE]... [--timeout SECS] [--mem MB]
#
# Boot the VM lab by hand. The serial console is this terminal: the guest prints its results
# (=== VMLAB RESULT PASS|FAIL: ... ===) and powers off. For the "lio" scenario the guest waits
# after "=== VMLAB READY ===" for commands on the console: type "stop" (or "run ID CMD" to run a
# shell command in the guest), or press Ctrl-C here. The target is at 127.0.0.1:PORT
# (default 13260), e.g.  iscsi-inq iscsi://127.0.0.1:13260/iqn.2003-01.org.linux-iscsi.vmlab:t0/1
#
#   --param lio.chap=user:secret     adds lunbridge.lio.chap=user:secret to the kernel cmdline
#   --lunbridge PATH                 static lunbridge binary copied to /bin/lunbridge
#   --timeout SECS                   guest watchdog and host timeout (default 600)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 1 ] || { sed -n '2,14p' "$0"; exit 2; }
SCENARIO=$1; shift
LUNBRIDGE= PORT=13260 TIMEOUT=600 MEM=512 PARAMS=()
while [ $# -gt 0 ]; do
  case $1 in
    --lunbridge) LUNBRIDGE=$2; shift 2;;
    --port) PORT=$2; shift 2;;
    --param) PARAMS+=("lunbridge.$2"); shift 2;;
    --timeout) TIMEOUT=$2; shift 2;;
    --mem) MEM=$2; shift 2;;
    *) echo "run.sh: unknown argument $1" >&2; exit 2;;
  esac
done
eval "$("$HERE/build.sh" | grep '^VMLAB_')"
INITRD=$(mktemp "${TMPDIR:-/tmp}/vmlab-initrd.XXXXXX")
trap 'rm -f "$INITRD"' EXIT
"$HERE/initramfs.sh" "$INITRD" "$VMLAB_BASE" ${LUNBRIDGE:+--lunbridge "$LUNBRIDGE"}
echo "vmlab: kernel $VMLAB_KVER, scenario $SCENARIO, guest port 3260 at 127.0.0.1:$PORT, log on this console" >&2
timeout --foreground -k 5 "$((TIMEOUT + 30))" qemu-system-x86_64 -accel tcg -m "$MEM" -smp 1 \
  -nographic -no-reboot -nodefaults -serial stdio -monitor none \
  -kernel "$VMLAB_KERNEL" -initrd "$INITRD" \
  -append "console=ttyS0 panic=-1 loglevel=4 lunbridge.scenario=$SCENARIO lunbridge.timeout=$TIMEOUT ${PARAMS[*]}" \
  -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$PORT-:3260" -device virtio-net-pci,netdev=n0,romfile=
