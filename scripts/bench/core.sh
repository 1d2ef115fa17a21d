#!/usr/bin/env bash
# core (issue 2): `lunbridge bench` vs libiscsi's `iscsi-perf` on the same tgtd
# RAM LUN (a file in /dev/shm), alternating; then the IOPS pair on a tgtd
# `--bstype null` LUN (no data copy in the target: the initiator's CPU cost
# per command decides); then peak RSS of bench at QD128 with 1 MiB reads.
# Bars: >= 1.0x iscsi-perf on each (aim 1.25x on IOPS); RSS < 64 MiB.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init core

bench_target core "$BENCH_SIZE"
URL="${T_URL[core]}"
# A second LUN on the same target: tgtd's null backing store (reads return
# zeroes, writes are dropped).
bench_tgtadm core --mode logicalunit --op new --tid 1 --lun 2 --bstype null --backing-store /dev/null ||
	lb_die "adding a null LUN failed"
NULL_URL="${URL%/1}/2"
# Write the whole RAM LUN once so reads hit allocated memory.
dd if=/dev/urandom of="${T_FILE[core]}" bs=1M count=$((BENCH_SIZE_BYTES >> 20)) conv=notrunc status=none

lb_rr() { lb_bench_json --rw randread --bs 4k --qd 32 "$URL"; }
pe_rr() { peer_iscsi_perf 8 32 -r "$URL"; }
lb_rw() { lb_bench_json --rw randwrite --yes --bs 4k --qd 32 "$URL"; }
pe_none() { echo "n/a n/a"; }
lb_sr() { lb_bench_json --rw read --bs 1M --qd 8 "$URL"; }
pe_sr() { peer_iscsi_perf 2048 8 "$URL"; }
lb_nrr() { lb_bench_json --rw randread --bs 4k --qd 32 --span "$BENCH_SIZE" "$NULL_URL"; }
pe_nrr() { peer_iscsi_perf 8 32 -r "$NULL_URL"; }
lb_nrw() { lb_bench_json --rw randwrite --yes --bs 4k --qd 32 --span "$BENCH_SIZE" "$NULL_URL"; }

BENCH_CPU=1 BENCH_CPU_BAR=2.0 BENCH_SYSC=1 bench_pair "4k randread QD32 (RAM LUN)" IOPS 1 1.0 iscsi-perf lb_rr pe_rr
bench_pair "1M seq read QD8 (RAM LUN)" MB/s 2 1.0 iscsi-perf lb_sr pe_sr
BENCH_CPU=1 bench_pair "4k randread QD32 (null LUN)" IOPS 1 1.0 iscsi-perf lb_nrr pe_nrr
# The same with the Go scheduler on every CPU (--procs 0). bench's default
# is half the CPUs (docs/cli.md: fewer thread hand-offs per I/O); these
# rows show what that default is worth on this host.
lb_nrr0() { LUNBRIDGE_PROCS=0 lb_nrr; }
lb_rr0() { LUNBRIDGE_PROCS=0 lb_rr; }
# With one host CPU (2 cores, BENCH_PIN=1) --procs 0 and bench's default
# (half the CPUs, at least one) are both one P: the rows would repeat the
# two above.
if [ "$(nproc)" -ge 2 ]; then
	bench_pair "4k randread QD32 (null LUN, --procs 0)" IOPS 1 1.0 iscsi-perf lb_nrr0 pe_nrr
	bench_pair "4k randread QD32 (RAM LUN, --procs 0)" IOPS 1 1.0 iscsi-perf lb_rr0 pe_rr
fi
# iscsi-perf (libiscsi-bin 1.19, "version 0.1") has no write mode: its options
# are -i -m -b -t -r -l -n -x. The random-write figures are lunbridge's alone;
# writes are compared with libiscsi through `qemu-img bench -w` (qemu's block
# layer on libiscsi), which writes sequentially only, so lunbridge writes
# sequentially too in those rows (on a RAM or null LUN the order costs the
# target nothing).
NOWRITE="blocked: iscsi-perf has no write mode; lunbridge figure only (the 4k write rows compare writes with libiscsi via qemu-img bench -w)"
bench_pair "4k randwrite QD32 (RAM LUN)" IOPS 1 1.0 iscsi-perf lb_rw pe_none "$NOWRITE"
bench_pair "4k randwrite QD32 (null LUN)" IOPS 1 1.0 iscsi-perf lb_nrw pe_none "$NOWRITE"
lb_sw() { lb_bench_json --rw write --yes --bs 4k --qd 32 "$URL"; }
pe_sw() { peer_qemu_bench_write 4096 32 "$URL"; }
lb_nsw() { lb_bench_json --rw write --yes --bs 4k --qd 32 --span "$BENCH_SIZE" "$NULL_URL"; }
pe_nsw() { peer_qemu_bench_write 4096 32 "$NULL_URL"; }
bench_pair "4k seq write QD32 (RAM LUN)" IOPS 1 1.0 "qemu-img bench -w" lb_sw pe_sw
bench_pair "4k seq write QD32 (null LUN)" IOPS 1 1.0 "qemu-img bench -w" lb_nsw pe_nsw

lb_log " - peak RSS: bench --rw read --bs 1M --qd 128"
rss="$(bench_max_rss_mib "$LB" bench --rw read --bs 1M --qd 128 --time "${BENCH_TIME}s" "$URL")"
bench_record_limit "bench 1M read QD128 max RSS" "$rss" 64

bench_done
