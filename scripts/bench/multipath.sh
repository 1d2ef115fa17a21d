#!/usr/bin/env bash
# multipath (issue 8): one tgtd target with two portals (127.0.0.1 and
# 127.0.0.2, same port), 1 MiB sequential reads.
#   - `lunbridge bench --path URL2 --policy round-robin URL1` vs one URL
#     (bar >= 1.3x). Tried first; when bench does not take several URLs
#     the failure is recorded and the part goes on with:
#   - a two-session proxy: two `lunbridge bench --qd 4` processes at once,
#     one per portal, vs one `lunbridge bench --qd 8` on one portal (what two
#     paths could give at best on this machine), and the same with
#     iscsi-perf (2 x -m 4 vs 1 x -m 8) to show whether the target or the
#     2-core machine is the bottleneck rather than one connection.
# MC/S (several connections in one session, istgt) has no CLI switch yet.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init multipath

bench_target mp "$BENCH_SIZE"
URL1="${T_URL[mp]}"
PORT="${T_PORT[mp]}"
URL2="${URL1/127.0.0.1:/127.0.0.2:}"
bench_tgtadm mp --mode portal --op new --param "portal=127.0.0.2:$PORT" || lb_die "adding portal 127.0.0.2:$PORT failed"
dd if=/dev/urandom of="${T_FILE[mp]}" bs=1M count=$((BENCH_SIZE_BYTES >> 20)) conv=notrunc status=none

# Does bench take two URLs?
RR_OK=0
# (second path given with --path; older builds took no second URL at all)
if timeout -s KILL 30 "$LB" bench --json --time 1s --rw read --bs 1M --qd 8 "${NOCTL[@]}" \
	--policy round-robin --path "$URL2" "$URL1" >"$BENCH_TMP/rr-probe.out" 2>"$BENCH_TMP/rr-probe.err"; then
	RR_OK=1
else
	RR_ERR="$(tr '\n' ' ' <"$BENCH_TMP/rr-probe.err" | cut -c1-160)"
	lb_log "   bench with two URLs + --policy round-robin is not available: $RR_ERR"
fi

lb_one() { lb_bench_json --rw read --bs 1M --qd 8 "$URL1"; }
lb_rr() { lb_bench_json --rw read --bs 1M --qd 8 --policy round-robin --path "$URL2" "$URL1"; }

# both CMD1 -- CMD2: run two "IOPS MBPS" producers at once, print the sums.
lb_two() {
	local a="$BENCH_TMP/two-a" b="$BENCH_TMP/two-b"
	lb_bench_json --rw read --bs 1M --qd 4 "$URL1" >"$a" &
	local p=$!
	lb_bench_json --rw read --bs 1M --qd 4 "$URL2" >"$b"
	wait "$p"
	cat "$a" "$b" | awk '{ i += $1; m += $2 } END { print i, m }'
}
pe_one() { peer_iscsi_perf 2048 8 "$URL1"; }
pe_two() {
	local a="$BENCH_TMP/ptwo-a" b="$BENCH_TMP/ptwo-b"
	peer_iscsi_perf 2048 4 "$URL1" >"$a" &
	local p=$!
	peer_iscsi_perf 2048 4 "$URL2" >"$b"
	wait "$p"
	cat "$a" "$b" | awk '{ i += $1; m += $2 } END { print i, m }'
}

if [ "$RR_OK" = 1 ]; then
	bench_pair "1M seq read QD8: round-robin 2 paths vs 1 path" MB/s 2 1.3 "lunbridge 1 path" lb_rr lb_one
else
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' multipath "1M seq read QD8: round-robin 2 paths vs 1 path" MB/s \
		n/a "lunbridge 1 path" n/a n/a 1.3 blocked "bench takes one URL: $RR_ERR" >>"$BENCH_RESULTS"
fi
bench_pair "1M seq read: 2 sessions (2 portals, QD4 each) vs 1 (QD8)" MB/s 2 1.3 "lunbridge 1 session" lb_two lb_one \
	"proxy for round-robin: two lunbridge processes at once"
bench_pair "iscsi-perf 1M read: 2 sessions (QD4 each) vs 1 (QD8)" MB/s 2 - "iscsi-perf 1 session" pe_two pe_one \
	"both columns are iscsi-perf: 2 sessions / 1 session (is one connection the limit?)"

bench_done
