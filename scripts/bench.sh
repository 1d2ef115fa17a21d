#!/usr/bin/env bash
# lunbridge benchmarks: lunbridge vs its peers (iscsi-perf, qemu-img,
# qemu-nbd, nbdfuse) on loopback tgtd RAM LUNs, alternating in one run,
# reported as ratios (lunbridge / peer, medians of BENCH_ROUNDS runs each).
#
#   scripts/bench.sh [all|core|null|pull|nbd|fuse|multipath|mirror]...   (default: all)
#
# Knobs: BENCH_TIME (seconds per timed run, default 10), BENCH_ROUNDS
# (default 2), BENCH_SIZE (LUN size, default 1G), BENCH_OUT (default out/),
# BENCH_LB (lunbridge binary to measure, default bin/lunbridge).
# Needs root (tgtd, FUSE). Prints one table at the end and writes it as JSON
# to out/bench-YYYYmmdd-HHMMSS.json. See docs/benchmarks.md.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/bench/common.sh"

ALL_PARTS=(core null pull nbd fuse multipath mirror)
parts=()
[ $# -gt 0 ] || set -- all
for a in "$@"; do
	case "$a" in
	all) parts+=("${ALL_PARTS[@]}") ;;
	core | null | pull | nbd | fuse | multipath | mirror) parts+=("$a") ;;
	-h | --help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) lb_die "unknown part $a (want all, ${ALL_PARTS[*]})" ;;
	esac
done

lb_need_root "benchmarks start tgtd, qemu-nbd and FUSE mounts"
bash "$LB_ROOT/scripts/install-deps.sh" >&2 || lb_die "installing dependencies failed"
export BENCH_DEPS_DONE=1
bench_build

tmp="$(mktemp -d /tmp/lunbridge-bench-all.XXXXXX)"
trap 'rm -rf "$tmp"' EXIT
# Every part measures this one copy, whatever happens to bin/ meanwhile.
cp "$BENCH_LB" "$tmp/lunbridge" || lb_die "cannot copy $BENCH_LB"
BENCH_LB_ORIG="$BENCH_LB"
BENCH_LB="$tmp/lunbridge"
export BENCH_RESULTS="$tmp/results.tsv" BENCH_TIME BENCH_ROUNDS BENCH_SIZE BENCH_OUT BENCH_LB
: >"$BENCH_RESULTS"
failed=()
for p in "${parts[@]}"; do
	# Each part cleans up after itself (its own EXIT trap); a failing part
	# does not stop the others.
	if ! bash "$LB_ROOT/scripts/bench/$p.sh"; then
		failed+=("$p")
		printf '%s\t%s\t\t\t\t\t\t\t%s\t%s\n' "$p" "(part failed)" "failed" "see the log above" >>"$BENCH_RESULTS"
	fi
done
BENCH_PART=all
lb_log "measured binary: $BENCH_LB_ORIG (copied at start)"
bench_summary "$BENCH_RESULTS"
[ ${#failed[@]} -eq 0 ] || { lb_log "parts that failed: ${failed[*]}"; exit 1; }
