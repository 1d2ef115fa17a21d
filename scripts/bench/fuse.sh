#!/usr/bin/env bash
# fuse (issue 7): fio (O_DIRECT, libaio) on MOUNT/disk.img from
# `lunbridge mount` vs from `nbdfuse` over `qemu-nbd` (libiscsi) of the same
# tgtd RAM LUN, alternating. Bars: >= 1.0x on each (aim 1.3x): 1 MiB seq
# read QD8, 1 MiB seq write QD8, 4k randread QD32.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init fuse

bench_target fuse "$BENCH_SIZE"
URL="${T_URL[fuse]}"
dd if=/dev/urandom of="${T_FILE[fuse]}" bs=1M count=$((BENCH_SIZE_BYTES >> 20)) conv=notrunc status=none

M1="$BENCH_TMP/lb-mnt"
M2="$BENCH_TMP/nbdfuse-mnt"
QN_SOCK="$BENCH_TMP/qn.sock"
mkdir -p "$M1" "$M2"

# lunbridge mount (daemon); unmounted with lunbridge umount, which waits for
# the serving process through the pid file.
"$LB" mount --daemon --pid-file "$BENCH_TMP/lb-mount.pid" "${NOCTL[@]}" "$URL" "$M1" >"$BENCH_TMP/mount.out" 2>"$BENCH_TMP/mount.err" ||
	lb_die "lunbridge mount failed: $(tail -n 5 "$BENCH_TMP/mount.err")"
bench_on_exit "'$LB' umount --pid-file '$BENCH_TMP/lb-mount.pid' --wait 20s '$M1' || { umount -l '$M1'; kill \$(cat '$BENCH_TMP/lb-mount.pid'); }"

# nbdfuse over qemu-nbd.
qemu-nbd -t -k "$QN_SOCK" -f raw --cache=none --aio=threads -e 4 "$URL" 2>"$BENCH_TMP/qemu-nbd.err" &
QN_PID=$!
bench_on_exit "bench_kill $QN_PID"
bench_wait_socket "$QN_SOCK" 30 || lb_die "qemu-nbd did not listen: $(tail -n 5 "$BENCH_TMP/qemu-nbd.err")"
nbdfuse -P "$BENCH_TMP/nbdfuse.pid" "$M2/disk.img" --unix "$QN_SOCK" 2>"$BENCH_TMP/nbdfuse.err" &
NF_PID=$!
bench_on_exit "fusermount3 -u '$M2' || umount -l '$M2'; bench_kill $NF_PID"
for ((i = 0; i < 200; i++)); do
	[ -s "$BENCH_TMP/nbdfuse.pid" ] && [ -e "$M2/disk.img" ] && break
	kill -0 "$NF_PID" 2>/dev/null || lb_die "nbdfuse exited: $(tail -n 5 "$BENCH_TMP/nbdfuse.err")"
	sleep 0.05
done
[ -e "$M2/disk.img" ] || lb_die "nbdfuse did not mount: $(tail -n 5 "$BENCH_TMP/nbdfuse.err")"
[ -e "$M1/disk.img" ] || lb_die "lunbridge mount has no disk.img"

filefio() { # MOUNT NAME ARGS...
	local m="$1" name="$2"
	shift 2
	run_fio "$name" --filename="$m/disk.img" --ioengine=libaio --direct=1 --size="$BENCH_SIZE_BYTES" "$@"
}
lb_sr() { filefio "$M1" lb-sr --rw=read --bs=1M --iodepth=8; }
nf_sr() { filefio "$M2" nf-sr --rw=read --bs=1M --iodepth=8; }
lb_sw() { filefio "$M1" lb-sw --rw=write --bs=1M --iodepth=8; }
nf_sw() { filefio "$M2" nf-sw --rw=write --bs=1M --iodepth=8; }
lb_rr() { filefio "$M1" lb-rr --rw=randread --bs=4k --iodepth=32; }
nf_rr() { filefio "$M2" nf-rr --rw=randread --bs=4k --iodepth=32; }

bench_pair "fio file 1M seq read QD8" MB/s 2 1.0 "nbdfuse+qemu-nbd" lb_sr nf_sr
bench_pair "fio file 1M seq write QD8" MB/s 2 1.0 "nbdfuse+qemu-nbd" lb_sw nf_sw
bench_pair "fio file 4k randread QD32" IOPS 1 1.0 "nbdfuse+qemu-nbd" lb_rr nf_rr

bench_done
