#!/usr/bin/env bash
# null (issue 24): the initiators' own cost, against a target that costs
# almost nothing per command. `lbtarget null` (internal/testrig/nulltarget) serves a
# null disk (reads return zeroes, writes are dropped) from one goroutine per
# connection with batched socket I/O, on one P, pinned to the target CPU like
# tgtd in the other parts. On tgtd every initiator ends at tgtd's single
# event-loop thread; here the IOPS ratio is the initiators' own.
#
# Rows (lunbridge bench vs iscsi-perf, alternating): 4k random reads at QD32
# (bar: IOPS >= 1.5x iscsi-perf; initiator CPU per I/O <= 0.5x), 1 MiB
# sequential reads at QD8 (bar >= 1.0x), each with user+system CPU per I/O,
# system calls per I/O and context switches per I/O of each initiator
# process (perf stat, login included); lunbridge-only 4k random writes. Then
# `serve` per NBD read against qemu-nbd's, both on this target (CPU of the
# NBD server process only; fio is the client of both).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init null

out="$BENCH_TMP/null.url"
"$LBT" null --listen 127.0.0.1:0 --size "$BENCH_SIZE" >"$out" 2>"$BENCH_TMP/null.err" &
NULL_PID=$!
bench_on_exit "kill $NULL_PID"
for ((i = 0; i < 100; i++)); do
	[ -s "$out" ] && break
	sleep 0.05
done
URL="$(head -n 1 "$out")"
[ -n "$URL" ] || lb_die "lbtarget null did not start: $(cat "$BENCH_TMP/null.err")"
bench_pin_target "$NULL_PID"
lb_log "null target: $URL (pid $NULL_PID)"

lb_rr() { lb_bench_json --rw randread --bs 4k --qd 32 "$URL"; }
pe_rr() { peer_iscsi_perf 8 32 -r "$URL"; }
lb_sr() { lb_bench_json --rw read --bs 1M --qd 8 "$URL"; }
pe_sr() { peer_iscsi_perf 2048 8 "$URL"; }
lb_sr256() { lb_bench_json --max-recv-data-segment-length 256k --rw read --bs 1M --qd 8 "$URL"; }
lb_rw() { lb_bench_json --rw randwrite --yes --bs 4k --qd 32 "$URL"; }
pe_none() { echo "n/a n/a n/a n/a n/a"; }

BENCH_CPU=1 BENCH_CPU_BAR=2.0 BENCH_SYSC=1 bench_pair "4k randread QD32 (null target)" IOPS 1 1.5 iscsi-perf lb_rr pe_rr
BENCH_CPU=1 BENCH_SYSC=1 bench_pair "1M seq read QD8 (null target)" MB/s 2 1.0 iscsi-perf lb_sr pe_sr
# The 1 MiB rows end at the null target's core (97-98 % busy for every
# initiator, measured 2026-12-06), where its cost per byte depends on the
# PDU size: lunbridge declares MaxRecvDataSegmentLength 1 MiB (on tgtd one
# PDU per read is faster: 1.30x iscsi-perf there), libiscsi 256 KiB. The
# second row has lunbridge declare 256 KiB too: the same PDUs on the wire.
BENCH_CPU=1 BENCH_SYSC=1 bench_pair "1M seq read QD8 (null target), lunbridge with 256 KiB PDUs as libiscsi" MB/s 2 - iscsi-perf lb_sr256 pe_sr \
	"reported, no bar: the same PDU size for both; the target's core is the limit"
BENCH_CPU=1 BENCH_SYSC=1 bench_pair "4k randwrite QD32 (null target)" IOPS 1 - iscsi-perf lb_rw pe_none \
	"blocked: iscsi-perf has no write mode; lunbridge figure only"

# NBD servers on the null target: lunbridge serve vs qemu-nbd (libiscsi),
# fio as the client of both. The figures are the server process's own:
# CPU (utime+stime from /proc/PID/stat) and, by perf stat attached to it
# for the run, system calls and context switches, per I/O (I/Os = fio's
# IOPS x (BENCH_TIME + its 1 s ramp), which the counters also cover).
LB_SOCK="$BENCH_TMP/lb.sock"
QN_SOCK="$BENCH_TMP/qn.sock"
"$LB" serve --listen "unix:$LB_SOCK" --persistent "${NOCTL[@]}" "$URL" >"$BENCH_TMP/serve.out" 2>"$BENCH_TMP/serve.err" &
LB_PID=$!
bench_on_exit "bench_kill $LB_PID"
qemu-nbd -t -k "$QN_SOCK" -f raw --cache=none --aio=threads -e 4 "$URL" 2>"$BENCH_TMP/qemu-nbd.err" &
QN_PID=$!
bench_on_exit "bench_kill $QN_PID"
bench_wait_socket "$LB_SOCK" 30 || lb_die "lunbridge serve did not listen: $(tail -n 5 "$BENCH_TMP/serve.err")"
bench_wait_socket "$QN_SOCK" 30 || lb_die "qemu-nbd did not listen: $(tail -n 5 "$BENCH_TMP/qemu-nbd.err")"
sleep 0.5

proc_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
# srv_fio PID SOCK NAME FIO-ARGS...: "IOPS MBPS CPU-us/IO CALLS/IO CS/IO" of server PID.
srv_fio() {
	local pid="$1" sock="$2" name="$3" t0 t1 pp r pf="$BENCH_TMP/srv-$3.perf"
	shift 3
	t0="$(proc_ticks "$pid")"
	perf stat -x, -e raw_syscalls:sys_enter,context-switches -p "$pid" -o "$pf" 2>/dev/null &
	pp=$!
	r="$(run_fio "$name" --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --size="$BENCH_SIZE_BYTES" "$@")"
	kill -INT "$pp" 2>/dev/null
	wait "$pp" 2>/dev/null || true
	t1="$(proc_ticks "$pid")"
	awk -v r="$r" -v d="$((t1 - t0))" -v hz="$(getconf CLK_TCK)" -v t="$BENCH_TIME" \
		-v sc="$(perf_count "$pf" raw_syscalls:sys_enter)" -v cs="$(perf_count "$pf" context-switches)" 'BEGIN {
		split(r, f, " "); n = f[1] * (t + 1)
		if (f[1] !~ /^[0-9.]+$/ || n <= 0) { print "n/a n/a n/a n/a n/a"; exit }
		printf "%s %s %.2f %s %s\n", f[1], f[2], d / hz * 1e6 / n,
			(sc != "") ? sprintf("%.2f", sc / n) : "n/a", (cs != "") ? sprintf("%.3f", cs / n) : "n/a" }'
}
lb_nrr() { srv_fio "$LB_PID" "$LB_SOCK" lb-rr --rw=randread --bs=4k --iodepth=32; }
qn_nrr() { srv_fio "$QN_PID" "$QN_SOCK" qn-rr --rw=randread --bs=4k --iodepth=32; }
lb_nrw() { srv_fio "$LB_PID" "$LB_SOCK" lb-rw --rw=randwrite --bs=4k --iodepth=32; }
qn_nrw() { srv_fio "$QN_PID" "$QN_SOCK" qn-rw --rw=randwrite --bs=4k --iodepth=32; }
BENCH_CPU=1 BENCH_CPU_WHO=server BENCH_CPU_BAR=2.0 BENCH_SYSC=1 bench_pair "NBD 4k randread QD32, fio -> server -> null target" IOPS 1 - qemu-nbd lb_nrr qn_nrr \
	"reported, no bar on IOPS (fio shares the host CPU); the bar is on the server's CPU per I/O (<= 0.5x qemu-nbd's)"
BENCH_CPU=1 BENCH_CPU_WHO=server BENCH_SYSC=1 bench_pair "NBD 4k randwrite QD32, fio -> server -> null target" IOPS 1 - qemu-nbd lb_nrw qn_nrw \
	"reported, no bar"

bench_done
