#!/usr/bin/env bash
# nbd (issue 6): fio (nbd engine) against `lunbridge serve` vs against
# `qemu-nbd -f raw --cache=none --aio=threads` (libiscsi) exporting the same
# tgtd RAM LUN, alternating. Bars: 4k randread QD32 >= 1.2x, 4k randwrite
# QD32 >= 1.2x, 1 MiB sequential read QD8 >= 1.0x. With BENCH_PIN=1 (the
# default) tgtd runs on its own CPU, as a SAN's target would, and one more
# row repeats the 4k randread pair with free placement.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init nbd

bench_target nbd "$BENCH_SIZE"
URL="${T_URL[nbd]}"
dd if=/dev/urandom of="${T_FILE[nbd]}" bs=1M count=$((BENCH_SIZE_BYTES >> 20)) conv=notrunc status=none

LB_SOCK="$BENCH_TMP/lb.sock"
QN_SOCK="$BENCH_TMP/qn.sock"

# Both servers stay up for the whole part (idle while the other is measured).
"$LB" serve --listen "unix:$LB_SOCK" --persistent "${NOCTL[@]}" "$URL" >"$BENCH_TMP/serve.out" 2>"$BENCH_TMP/serve.err" &
LB_PID=$!
bench_on_exit "bench_kill $LB_PID"
qemu-nbd -t -k "$QN_SOCK" -f raw --cache=none --aio=threads -e 4 "$URL" 2>"$BENCH_TMP/qemu-nbd.err" &
QN_PID=$!
bench_on_exit "bench_kill $QN_PID"
bench_wait_socket "$LB_SOCK" 30 || lb_die "lunbridge serve did not listen: $(tail -n 5 "$BENCH_TMP/serve.err")"
bench_wait_socket "$QN_SOCK" 30 || lb_die "qemu-nbd did not listen: $(tail -n 5 "$BENCH_TMP/qemu-nbd.err")"
sleep 0.5
lb_log "lunbridge serve printed: $(head -n 1 "$BENCH_TMP/serve.out")"

nbdfio() { # SOCK NAME ARGS...
	local sock="$1" name="$2"
	shift 2
	run_fio "$name" --ioengine=nbd --uri="nbd+unix:///?socket=$sock" --size="$BENCH_SIZE_BYTES" "$@"
}
lb_rr() { nbdfio "$LB_SOCK" lb-rr --rw=randread --bs=4k --iodepth=32; }
qn_rr() { nbdfio "$QN_SOCK" qn-rr --rw=randread --bs=4k --iodepth=32; }
lb_rw() { nbdfio "$LB_SOCK" lb-rw --rw=randwrite --bs=4k --iodepth=32; }
qn_rw() { nbdfio "$QN_SOCK" qn-rw --rw=randwrite --bs=4k --iodepth=32; }
lb_sr() { nbdfio "$LB_SOCK" lb-sr --rw=read --bs=1M --iodepth=8; }
qn_sr() { nbdfio "$QN_SOCK" qn-sr --rw=read --bs=1M --iodepth=8; }

bench_pair "fio nbd 4k randread QD32" IOPS 1 1.2 "qemu-nbd(libiscsi)" lb_rr qn_rr
bench_pair "fio nbd 4k randwrite QD32" IOPS 1 1.2 "qemu-nbd(libiscsi)" lb_rw qn_rw
bench_pair "fio nbd 1M seq read QD8" MB/s 2 1.0 "qemu-nbd(libiscsi)" lb_sr qn_sr

# The same 4k pair with the scheduler placing every process (tgtd, both
# servers and fio on any CPU): shown beside the pinned rows, without a bar.
# Which core tgtd lands on then decides much of each run (common.sh).
if [ "$BENCH_PIN" = 1 ]; then
	bench_unpin "${T_PID[nbd]}" "$LB_PID" "$QN_PID"
	bench_pair "fio nbd 4k randread QD32, free placement" IOPS 1 - "qemu-nbd(libiscsi)" lb_rr qn_rr
fi

bench_done
