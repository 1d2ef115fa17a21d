#!/usr/bin/env bash
# make demo: install what is needed, start a local demo target (tgtd with a
# 1 GiB RAM-backed LUN on loopback) and run lunbridge's main jobs against it
# end to end: find it, inspect it, measure it, back it up, verify the
# backup, expose it over NBD and as a FUSE-mounted image file.
# The target keeps running afterwards; stop it with `make demo-stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
lb_need_root "the demo target (tgtd) and FUSE need root"

LB=bin/lunbridge
[ -x "$LB" ] || make -s build
work="${LUNBRIDGE_DEMO_WORK:-/tmp/lunbridge-demo}"
mkdir -p "$work"

step() { printf '\n\033[1m== %s\033[0m\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

url="$(bash scripts/demo-target.sh start)"
portal="${url#iscsi://}"; portal="${portal%%/*}"
echo "demo target: $url"

step "Find targets (SendTargets), like iscsiadm -m discovery" "$LB" discover "$portal"
step "List every LUN, like iscsi-ls -s" "$LB" ls "$portal"
step "One LUN in detail" "$LB" info "$url"
step "Fill the LUN with 256 MiB of random data (push from a file)" bash -c \
  "head -c 256M /dev/urandom > '$work/seed.raw' && '$LB' push --yes '$work/seed.raw' '$url'"
step "Benchmark: 4k random reads at queue depth 32 (like iscsi-perf)" "$LB" bench --rw randread --bs 4k --qd 32 --time 3s "$url"
step "Back up the whole LUN to a sparse file with its blkhash" "$LB" pull --force "$url" "$work/backup.raw"
step "Verify the backup against the LUN" "$LB" verify "$url" "$work/backup.raw"
step "Check the LUN against the backup's checksum file" "$LB" verify "$url" "$work/backup.raw.blksum"

sock="$work/nbd.sock"
rm -f "$sock"
echo
echo "== Expose the LUN over NBD (lunbridge serve) and read it with nbdinfo"
"$LB" serve --listen "unix:$sock" --persistent --control-socket "" "$url" >"$work/serve.out" 2>"$work/serve.err" &
spid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
echo "\$ nbdinfo 'nbd+unix:///?socket=$sock'"
timeout 20 nbdinfo "nbd+unix:///?socket=$sock" | head -20 || true
kill -TERM "$spid"; wait "$spid" || true

mnt="$work/mnt"
mkdir -p "$mnt"
echo
echo "== Mount the LUN as an image file with FUSE (lunbridge mount) and look inside"
"$LB" umount "$mnt" >/dev/null 2>&1 || true
"$LB" mount --daemon --pid-file "$work/mount.pid" --control-socket "" "$url" "$mnt"
echo "\$ ls -l $mnt"; ls -l "$mnt"
echo "\$ cmp <(head -c 1M $mnt/disk.img) <(head -c 1M $work/seed.raw)"
cmp <(head -c 1M "$mnt/disk.img") <(head -c 1M "$work/seed.raw") && echo "identical"
"$LB" umount --pid-file "$work/mount.pid" "$mnt"

# NVMe/TCP: the same jobs on an NVMe/TCP subsystem. This host's kernel has no
# NVMe/TCP target (nvmet), so the demo serves lunbridge's scripted fake
# controller as a process (bin/lbnvme); the kernel target is tested in the VM
# lab (go test ./internal/testrig/vmlab -run NVMet with LUNBRIDGE_VMLAB=1).
echo
echo "== NVMe/TCP: a demo subsystem (lbnvme, the fake controller; the kernel nvmet runs in the VM lab)"
LBNVME=bin/lbnvme
[ -x "$LBNVME" ] || lb_go build -o "$LBNVME" ./internal/testrig/fakenvme/cmd/lbnvme
"$LBNVME" --listen 127.0.0.1:0 --size 256M >"$work/lbnvme.url" 2>"$work/lbnvme.err" &
npid=$!
trap 'kill -TERM "$npid" 2>/dev/null || true' EXIT
for _ in $(seq 50); do [ -s "$work/lbnvme.url" ] && break; sleep 0.1; done
nurl="$(cat "$work/lbnvme.url")"
naddr="${nurl#nvme+tcp://}"; naddr="${naddr%%/*}"
step "NVMe/TCP: read the discovery log page" "$LB" discover --nvme "$naddr"
step "NVMe/TCP: controllers and namespaces (model, NGUID, LBA format, ANA state)" "$LB" ls --nvme "$naddr"
step "NVMe/TCP: push the same 256 MiB" "$LB" push --yes "$work/seed.raw" "$nurl"
step "NVMe/TCP: back the namespace up" "$LB" pull --force "$nurl" "$work/nvme-backup.raw"
step "NVMe/TCP: verify the backup" "$LB" verify "$nurl" "$work/nvme-backup.raw"
rm -f "$sock"
echo
echo "== NVMe/TCP: expose the namespace over NBD (lunbridge serve) and read it with nbdinfo"
"$LB" serve --listen "unix:$sock" --persistent --control-socket "" "$nurl" >"$work/serve-nvme.out" 2>"$work/serve-nvme.err" &
spid=$!
for _ in $(seq 50); do [ -S "$sock" ] && break; sleep 0.1; done
echo "\$ nbdinfo 'nbd+unix:///?socket=$sock'"
timeout 20 nbdinfo "nbd+unix:///?socket=$sock" | head -20 || true
kill -TERM "$spid"; wait "$spid" || true
kill -TERM "$npid"; wait "$npid" || true
trap - EXIT

echo
echo "Demo done. The demo target is still running at $url"
echo "Try: $LB --help    |    stop the target with: make demo-stop"
