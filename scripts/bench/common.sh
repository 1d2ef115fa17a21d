# shellcheck shell=bash
# Shared helpers of the benchmark scripts (scripts/bench.sh, scripts/bench/*.sh).
# Source it: . "$(dirname "${BASH_SOURCE[0]}")/common.sh"
#
# Every part measures lunbridge and a peer tool in the SAME run, alternating
# them (lunbridge then peer in odd rounds, peer then lunbridge in even ones,
# BENCH_ROUNDS times each), takes
# the median of each side and records the ratio lunbridge/peer (higher is
# better: every figure recorded is a rate — IOPS, MB/s — never a time).
#
# Knobs (environment):
#   BENCH_TIME    seconds per timed run (default 10)
#   BENCH_ROUNDS  runs of each side (default 2; the figure is the median)
#   BENCH_SIZE    LUN size (default 1G)
#   BENCH_OUT     directory of the JSON summary (default out/ in the repo)
#   BENCH_LB      the lunbridge binary to measure (default bin/lunbridge, built
#                 when missing); each part copies it first, so a rebuild of
#                 bin/ during the run does not change what is measured
#   BENCH_PIN     1 (default on 2+ CPUs): the target runs on its own CPUs,
#                 everything else on the others (see bench_placement); 0: the
#                 scheduler places every process
#   BENCH_TARGET_CPUS, BENCH_HOST_CPUS
#                 the two CPU lists (taskset -c syntax) when BENCH_PIN=1;
#                 default: the first half of the online CPUs (at least one)
#                 for the target, the rest for the host side

. "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"

BENCH_TIME="${BENCH_TIME:-10}"
BENCH_ROUNDS="${BENCH_ROUNDS:-2}"
BENCH_SIZE="${BENCH_SIZE:-1G}"
BENCH_OUT="${BENCH_OUT:-$LB_ROOT/out}"
BENCH_LB="${BENCH_LB:-$LB_ROOT/bin/lunbridge}"
LB="$BENCH_LB"
LBT="$LB_ROOT/bin/lbtarget"
NOCTL=() # --control-socket "" where the binary has it (no shared status socket)

# bench_size_bytes SIZE: 1G -> 1073741824 (K/M/G/T, binary).
bench_size_bytes() {
	local s="$1" n u
	n="${s%[KkMmGgTt]}"
	u="${s#"$n"}"
	case "$u" in
	"") echo "$n" ;;
	[Kk]) echo $((n << 10)) ;;
	[Mm]) echo $((n << 20)) ;;
	[Gg]) echo $((n << 30)) ;;
	[Tt]) echo $((n << 40)) ;;
	esac
}
BENCH_SIZE_BYTES="$(bench_size_bytes "$BENCH_SIZE")"

# --- placement --------------------------------------------------------------
#
# A SAN is another machine: its target never competes with the initiator,
# the NBD server or the application for a CPU. On this 2-core lab machine
# they share two cores, and the scheduler decides, run by run, whether tgtd
# runs beside the server or on the same core (a wakeup through a socket
# pulls the woken process to the waker's core). Measured on 2026-12-04 with
# fio 4k randread QD32 through `lunbridge serve`: 26-32k IOPS with tgtd on
# the server's core, 41-57k with tgtd on the other one, for the same binary
# within minutes; qemu-nbd 28-42k the same way. A ratio then says more about
# where tgtd happened to run than about the two initiators. So by default
# (BENCH_PIN=1) every part runs tgtd alone on BENCH_TARGET_CPUS — the
# target's own machine — and this script with everything it starts
# (lunbridge, the peers, fio, qemu-img) on BENCH_HOST_CPUS, the same for
# both sides of every pair. BENCH_PIN=0 restores free placement.

# bench_cpu_list_expand LIST: "0-2,5" -> "0 1 2 5".
bench_cpu_list_expand() {
	local part parts a b out=()
	IFS=, read -ra parts <<<"$1"
	for part in "${parts[@]}"; do
		if [[ "$part" == *-* ]]; then
			a="${part%-*}" b="${part#*-}"
			for ((; a <= b; a++)); do out+=("$a"); done
		elif [ -n "$part" ]; then
			out+=("$part")
		fi
	done
	echo "${out[*]}"
}

BENCH_ONLINE_CPUS="$(cat /sys/devices/system/cpu/online 2>/dev/null || echo 0)"
if [ -z "${BENCH_PIN:-}" ]; then
	BENCH_PIN=1
	[ "$(nproc --all)" -ge 2 ] || BENCH_PIN=0
fi
if [ "$BENCH_PIN" = 1 ] && { [ -z "${BENCH_TARGET_CPUS:-}" ] || [ -z "${BENCH_HOST_CPUS:-}" ]; }; then
	_cpus=($(bench_cpu_list_expand "$BENCH_ONLINE_CPUS"))
	if [ ${#_cpus[@]} -ge 2 ]; then
		_half=$((${#_cpus[@]} / 2))
		BENCH_TARGET_CPUS="$(IFS=,; echo "${_cpus[*]:0:$_half}")"
		BENCH_HOST_CPUS="$(IFS=,; echo "${_cpus[*]:$_half}")"
	else
		BENCH_PIN=0
	fi
	unset _cpus _half
fi
# BENCH_RUN_PIN: the placement of the whole run (set once, by the first
# script); a part that differs says so in its rows' notes.
BENCH_RUN_PIN="${BENCH_RUN_PIN:-$BENCH_PIN}"
export BENCH_PIN BENCH_TARGET_CPUS BENCH_HOST_CPUS BENCH_RUN_PIN

# bench_placement: one line saying where the processes run.
bench_placement() {
	if [ "$BENCH_PIN" = 1 ]; then
		echo "target on CPU $BENCH_TARGET_CPUS, host side on CPU $BENCH_HOST_CPUS"
	else
		echo "free placement"
	fi
}

# bench_pin_host: this shell (and so everything it starts from now on) on
# the host CPUs.
bench_pin_host() {
	[ "$BENCH_PIN" = 1 ] || return 0
	taskset -a -p -c "$BENCH_HOST_CPUS" $$ >/dev/null || lb_die "taskset $BENCH_HOST_CPUS failed"
}

# bench_pin_target PID: every thread of PID on the target CPUs (threads it
# starts later inherit them).
bench_pin_target() {
	[ "$BENCH_PIN" = 1 ] || return 0
	taskset -a -p -c "$BENCH_TARGET_CPUS" "$1" >/dev/null || lb_die "taskset $BENCH_TARGET_CPUS $1 failed"
}

# bench_unpin PID...: every thread of each PID, and this shell, on every
# online CPU (for rows that show free placement beside pinned ones).
bench_unpin() {
	local p
	for p in "$@" $$; do
		taskset -a -p -c "$BENCH_ONLINE_CPUS" "$p" >/dev/null || lb_die "taskset $BENCH_ONLINE_CPUS $p failed"
	done
}

# --- setup / teardown -------------------------------------------------------

_BENCH_CLEANUPS=()
# bench_on_exit CMD...: run CMD (a string, eval'ed) at exit, last registered first.
bench_on_exit() { _BENCH_CLEANUPS+=("$*"); }

_bench_cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	for ((i = ${#_BENCH_CLEANUPS[@]} - 1; i >= 0; i--)); do
		eval "${_BENCH_CLEANUPS[$i]}" >/dev/null 2>&1 || true
	done
	[ -n "${BENCH_TMP:-}" ] && rm -rf "$BENCH_TMP"
	[ -n "${BENCH_SHM:-}" ] && rm -rf "$BENCH_SHM"
	exit "$rc"
}

# bench_init PART: tools, binaries, temp dirs, EXIT trap, results file.
bench_init() {
	BENCH_PART="$1"
	lb_need_root "benchmarks start tgtd, qemu-nbd and FUSE mounts"
	if [ -z "${BENCH_DEPS_DONE:-}" ]; then
		bash "$LB_ROOT/scripts/install-deps.sh" >&2 || lb_die "installing dependencies failed"
		export BENCH_DEPS_DONE=1
	fi
	bench_build
	BENCH_TMP="$(mktemp -d /tmp/lunbridge-bench.XXXXXX)"
	cp "$BENCH_LB" "$BENCH_TMP/lunbridge" || lb_die "cannot copy $BENCH_LB"
	LB="$BENCH_TMP/lunbridge"
	"$LB" bench --help 2>&1 | grep -q -- '--control-socket' && NOCTL=(--control-socket "")
	BENCH_SHM="$(mktemp -d /dev/shm/lunbridge-bench.XXXXXX)"
	bench_pin_host
	trap _bench_cleanup EXIT
	trap 'exit 130' INT TERM
	if [ -z "${BENCH_RESULTS:-}" ]; then
		# Run alone: this script owns the results file and prints the summary.
		BENCH_RESULTS="$BENCH_TMP/results.tsv"
		BENCH_OWNER=1
		: >"$BENCH_RESULTS"
	fi
	lb_log "== bench $BENCH_PART: BENCH_TIME=${BENCH_TIME}s BENCH_ROUNDS=$BENCH_ROUNDS BENCH_SIZE=$BENCH_SIZE, $(bench_placement)"
}

# bench_build: build bin/lunbridge (when BENCH_LB is it) and bin/lbtarget if missing.
bench_build() {
	if [ ! -x "$BENCH_LB" ] && [ "$BENCH_LB" = "$LB_ROOT/bin/lunbridge" ]; then
		lb_log "building bin/lunbridge"
		(cd "$LB_ROOT" && CGO_ENABLED=0 lb_go build -o bin/lunbridge ./cmd/lunbridge) || lb_die "build failed"
	fi
	[ -x "$BENCH_LB" ] || lb_die "no lunbridge binary at $BENCH_LB"
	if [ ! -x "$LBT" ]; then
		lb_log "building bin/lbtarget"
		(cd "$LB_ROOT" && lb_go build -o bin/lbtarget ./internal/testrig/targets/cmd/lbtarget) || lb_die "build failed"
	fi
}

# bench_done: print the summary when this script runs alone.
bench_done() {
	[ -n "${BENCH_OWNER:-}" ] && bench_summary "$BENCH_RESULTS"
	return 0
}

# bench_target NAME SIZE [iscsi-port]: start a tgtd with one RAM LUN (a file
# in /dev/shm) through lbtarget; stopped at exit. Sets, for NAME:
#   T_URL[NAME] T_DIR[NAME] T_CTL[NAME] T_PORT[NAME] T_FILE[NAME] T_IQN[NAME] T_PID[NAME]
# and, with BENCH_PIN=1, moves the tgtd to the target CPUs.
declare -A T_URL T_DIR T_CTL T_PORT T_FILE T_IQN T_PID
bench_target() {
	local name="$1" size="$2" dir iqn url
	dir="$BENCH_TMP/target-$name"
	mkdir -p "$dir"
	iqn="iqn.2026-11.org.lunbridge.bench:$name"
	url="$("$LBT" start --kind tgtd --state-dir "$dir" --size "$size" --name "$iqn" 2>"$dir/start.log")" ||
		{ cat "$dir/start.log" >&2; lb_die "starting tgtd ($name) failed"; }
	bench_on_exit "'$LBT' stop --state-dir '$dir'"
	T_URL[$name]="$url"
	T_DIR[$name]="$dir"
	T_IQN[$name]="$iqn"
	T_CTL[$name]="$(jq -r .Control "$dir/state.json")"
	T_PORT[$name]="$(jq -r .Port "$dir/state.json")"
	T_FILE[$name]="$(jq -r '.Targets[0].LUNs[0].Path' "$dir/state.json")"
	T_PID[$name]="$(jq -r .Pid "$dir/state.json")"
	bench_pin_target "${T_PID[$name]}"
}

# bench_tgtadm NAME ARGS...: tgtadm against NAME's tgtd.
bench_tgtadm() {
	local name="$1"
	shift
	tgtadm -C "${T_CTL[$name]}" --lld iscsi "$@"
}

# bench_wait_socket PATH [seconds]: wait until a Unix socket exists.
bench_wait_socket() {
	local i n=$((${2:-10} * 20))
	for ((i = 0; i < n; i++)); do
		[ -S "$1" ] && return 0
		sleep 0.05
	done
	return 1
}

# bench_kill PID: SIGTERM, wait up to 10 s, then SIGKILL.
bench_kill() {
	local pid="$1" i
	[ -n "$pid" ] || return 0
	kill -TERM "$pid" 2>/dev/null || return 0
	for ((i = 0; i < 100; i++)); do
		kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null; return 0; }
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

# --- measuring --------------------------------------------------------------

# bench_now: seconds since the epoch with nanoseconds.
bench_now() { date +%s.%N; }

# bench_median VALUES...: median (mean of the two middle values when even).
bench_median() {
	printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{v[NR]=$1} END {
		if (NR == 0) { print "n/a"; exit }
		m = (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2
		printf "%.1f\n", m }'
}

# bench_record TEST UNIT LB_VALUE PEER_VALUE PEER_NAME BAR [NOTE]
# Appends one line to the results. BAR is a minimum ratio ("1.0", "1.25") or
# "-" when the issue sets none; ratio = LB/PEER. A value "n/a" leaves the
# ratio empty. The lunbridge and peer values are medians.
bench_record() {
	local test="$1" unit="$2" lbv="$3" peerv="$4" peer="$5" bar="$6" note="${7:-}"
	local ratio verdict
	if [ "$BENCH_PIN" != "$BENCH_RUN_PIN" ]; then
		note="${note:+$note; }$(bench_placement)"
	fi
	# BENCH_INVERT=1: lower is better (e.g. bytes on disk): ratio = PEER/LB.
	ratio="$(awk -v a="$lbv" -v b="$peerv" -v inv="${BENCH_INVERT:-0}" 'BEGIN {
		if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/) { print "n/a"; exit }
		if (inv == 1) { t = a; a = b; b = t }
		if (b+0 == 0) { print (a+0 == 0) ? "1.00" : "n/a"; exit }
		printf "%.2f", a/b }')"
	if [ "$ratio" = "n/a" ] && [ "${note#blocked}" != "$note" ]; then
		verdict="blocked"
	elif [ "$ratio" = "n/a" ] || [ "$bar" = "-" ]; then
		verdict="-"
	else
		verdict="$(awk -v r="$ratio" -v b="$bar" 'BEGIN { print (r+0 >= b+0) ? "pass" : "below" }')"
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$BENCH_PART" "$test" "$unit" "$lbv" "$peer" "$peerv" \
		"$ratio" "$bar" "$verdict" "$note" >>"$BENCH_RESULTS"
	lb_log "   => $test: lunbridge $lbv $unit, $peer $peerv $unit, ratio $ratio (bar $bar) $verdict${note:+ — $note}"
}

# bench_summary RESULTS: the table on stdout, JSON in $BENCH_OUT.
bench_summary() {
	local res="$1" json
	mkdir -p "$BENCH_OUT"
	json="$BENCH_OUT/bench-$(date +%Y%m%d-%H%M%S).json"
	echo
	echo "lunbridge benchmarks — $(date '+%Y-%m-%d %H:%M'), $(nproc --all) cores ($(bench_placement)), binary $BENCH_LB (sha256 $(sha256sum "$BENCH_LB" | cut -c1-12)), BENCH_TIME=${BENCH_TIME}s, BENCH_ROUNDS=$BENCH_ROUNDS, BENCH_SIZE=$BENCH_SIZE (medians; ratio = lunbridge/peer, higher is better)"
	{
		printf 'part\ttest\tunit\tlunbridge\tpeer\tpeer value\tratio\tbar\tresult\tnote\n'
		cat "$res"
	} | awk -F'\t' 'BEGIN { OFS = "\t" } { print }' | column -t -s $'\t'
	jq -R -s --arg date "$(date -Iseconds)" --arg host "$(hostname)" --argjson cores "$(nproc --all)" --arg placement "$(bench_placement)" \
		--arg time "$BENCH_TIME" --arg rounds "$BENCH_ROUNDS" --arg size "$BENCH_SIZE" \
		--arg commit "$(cd "$LB_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)" \
		--arg binary "$BENCH_LB" --arg binsha "$(sha256sum "$BENCH_LB" | cut -c1-16)" '
		def num: if test("^[0-9.]+$") then tonumber else null end;
		{date: $date, host: $host, cores: $cores, placement: $placement, repo_head: $commit, binary: $binary, binary_sha256: $binsha,
		 bench_time_s: ($time|tonumber), rounds: ($rounds|tonumber), lun_size: $size,
		 results: [split("\n")[] | select(length > 0) | split("\t") |
			{part: .[0], test: .[1], unit: .[2], lunbridge: (.[3]|num), peer: .[4],
			 peer_value: (.[5]|num), ratio: (.[6]|num), bar: (.[7]|num), result: .[8], note: .[9]}]}' \
		"$res" >"$json"
	echo "JSON: $json"
}

# lb_bench_json ARGS...: one `lunbridge bench --json` run; prints "IOPS MBPS
# CPU" (CPU: the process's user+system microseconds per I/O, login included).
lb_bench_json() {
	local out tf pf cnt=()
	tf="$(mktemp -p "$BENCH_TMP" lb-bench.time.XXXXXX)" # runs may overlap (multipath, mirror)
	pf="$(mktemp -p "$BENCH_TMP" lb-bench.perf.XXXXXX)"
	[ -n "${BENCH_SYSC:-}" ] && cnt=(perf stat -x, -e raw_syscalls:sys_enter,context-switches -o "$pf" --)
	out="$(timeout -s KILL $((BENCH_TIME + 60)) /usr/bin/time -f "%U %S" -o "$tf" \
		"${cnt[@]}" "$LB" bench --json --time "${BENCH_TIME}s" "${NOCTL[@]}" "$@" 2>"$BENCH_TMP/lb-bench.err")" ||
		{ lb_log "lunbridge bench $* failed: $(tail -n 3 "$BENCH_TMP/lb-bench.err")"; echo "n/a n/a n/a n/a n/a"; return 0; }
	jq -r --arg cpu "$(cpu_seconds "$tf")" --arg sc "$(perf_count "$pf" raw_syscalls:sys_enter)" \
		--arg cs "$(perf_count "$pf" context-switches)" '
		def per($v): if .ios > 0 and ($v|length) > 0 then ($v|tonumber)/.ios else "n/a" end;
		"\(.iops) \(.mb_per_s) \(per($cpu) | if type == "number" then . * 1e6 else . end) \(per($sc)) \(per($cs))"' <<<"$out"
}

# perf_count FILE EVENT: the count of EVENT in a `perf stat -x,` output file
# (empty when absent).
perf_count() {
	awk -F, -v e="$2" '$3 == e && $1 ~ /^[0-9]+$/ { print $1 }' "$1" 2>/dev/null
}

# cpu_seconds FILE: user + system seconds from a `/usr/bin/time -f "%U %S"`
# output file (empty when it has none).
cpu_seconds() {
	awk 'NF == 2 && $1 ~ /^[0-9.]+$/ { c = $1 + $2 } END { if (c != "") print c }' "$1" 2>/dev/null
}

# peer_iscsi_perf BLOCKS QD [-r] URL: one iscsi-perf run; prints "IOPS MBPS
# CPU" (MB = 10^6 bytes, the unit of lunbridge bench; 512-byte blocks; CPU =
# iscsi-perf's user+system microseconds per I/O, login included as in
# lunbridge's figure).
peer_iscsi_perf() {
	local blocks="$1" qd="$2" iops tf pf cnt=()
	shift 2
	tf="$(mktemp -p "$BENCH_TMP" iscsi-perf.time.XXXXXX)"
	pf="$(mktemp -p "$BENCH_TMP" iscsi-perf.perf.XXXXXX)"
	[ -n "${BENCH_SYSC:-}" ] && cnt=(perf stat -x, -e raw_syscalls:sys_enter,context-switches -o "$pf" --)
	iops="$(timeout -s KILL $((BENCH_TIME + 30)) /usr/bin/time -f "%U %S" -o "$tf" \
		"${cnt[@]}" iscsi-perf -t "$BENCH_TIME" -b "$blocks" -m "$qd" "$@" 2>&1 |
		tr '\r' '\n' | sed -n 's/^iops average \([0-9]*\).*/\1/p' | tail -n 1)"
	[ -n "$iops" ] || { lb_log "iscsi-perf $* produced no average"; echo "n/a n/a n/a n/a n/a"; return 0; }
	awk -v i="$iops" -v b="$blocks" -v t="$BENCH_TIME" -v c="$(cpu_seconds "$tf")" \
		-v sc="$(perf_count "$pf" raw_syscalls:sys_enter)" -v cs="$(perf_count "$pf" context-switches)" 'BEGIN {
		n = i*t
		printf "%s %.1f %s %s %s\n", i, i*b*512/1e6, (c != "" && n > 0) ? sprintf("%.2f", c*1e6/n) : "n/a",
			(sc != "" && n > 0) ? sprintf("%.2f", sc/n) : "n/a", (cs != "" && n > 0) ? sprintf("%.3f", cs/n) : "n/a" }'
}

# peer_qemu_bench_write BYTES QD URL: libiscsi writes through qemu's block
# layer (`qemu-img bench -w`, sequential BYTES-sized writes at queue depth
# QD, wrapping at the end of the LUN), about BENCH_TIME seconds' worth;
# prints "IOPS MBPS".
peer_qemu_bench_write() {
	local bytes="$1" qd="$2" url="$3" count secs
	count=$((50000 * BENCH_TIME))
	secs="$(timeout -s KILL $((BENCH_TIME * 4 + 30)) qemu-img bench -f raw -w -t none -c "$count" -d "$qd" \
		-s "$bytes" -S "$bytes" "$url" 2>&1 | sed -n 's/^Run completed in \([0-9.]*\) seconds.*/\1/p')"
	[ -n "$secs" ] || { lb_log "qemu-img bench -w $url produced no time"; echo "n/a n/a"; return 0; }
	awk -v c="$count" -v s="$secs" -v b="$bytes" 'BEGIN { printf "%.1f %.1f\n", c/s, c*b/s/1e6 }'
}

# fio_json_rate OUT.json: prints "IOPS MBPS" of the first job (read+write).
fio_json_rate() {
	jq -r '.jobs[0] | "\(.read.iops + .write.iops) \((.read.bw_bytes + .write.bw_bytes)/1e6)"' "$1" 2>/dev/null ||
		echo "n/a n/a"
}

# run_fio NAME ARGS...: one timed fio run; prints "IOPS MBPS".
run_fio() {
	local name="$1" out="$BENCH_TMP/fio-$1.json"
	shift
	if ! timeout -s KILL $((BENCH_TIME + 60)) fio --name="$name" --output-format=json --output="$out" \
		--runtime="$BENCH_TIME" --time_based --ramp_time=1 --randrepeat=0 --norandommap "$@" >"$BENCH_TMP/fio.err" 2>&1; then
		lb_log "fio $name failed: $(tail -n 3 "$BENCH_TMP/fio.err")"
		echo "n/a n/a"
		return 0
	fi
	fio_json_rate "$out"
}

# bench_pair TEST UNIT FIELD BAR PEER_NAME LB_FN PEER_FN [NOTE]
# Alternates LB_FN and PEER_FN (each prints "IOPS MBPS [CPU]"), BENCH_ROUNDS
# times each, and records the medians of FIELD (1 = IOPS, 2 = MB/s). With
# BENCH_CPU set it also records the medians of the third field, each side's
# CPU per I/O, as a row of its own.
bench_pair() {
	local test="$1" unit="$2" field="$3" bar="$4" peer="$5" lbfn="$6" peerfn="$7" note="${8:-}"
	local i lbv=() pv=() lbc=() pc=() lbs=() ps=() lbx=() px=() a b spread steal0 steal
	lb_log " - $test"
	steal0="$(bench_cpu_snap)"
	for ((i = 1; i <= BENCH_ROUNDS; i++)); do
		# Odd rounds run lunbridge first, even rounds the peer: whatever
		# drifts during a part (page cache, a noisy neighbour) falls on
		# both sides alike.
		if ((i % 2)); then
			a="$($lbfn)"
			b="$($peerfn)"
		else
			b="$($peerfn)"
			a="$($lbfn)"
		fi
		lbv+=("$(awk -v f="$field" '{print $f}' <<<"$a")")
		pv+=("$(awk -v f="$field" '{print $f}' <<<"$b")")
		lbc+=("$(awk '{print $3}' <<<"$a")")
		pc+=("$(awk '{print $3}' <<<"$b")")
		lbs+=("$(awk '{print $4}' <<<"$a")")
		ps+=("$(awk '{print $4}' <<<"$b")")
		lbx+=("$(awk '{print $5}' <<<"$a")")
		px+=("$(awk '{print $5}' <<<"$b")")
		lb_log "   round $i: lunbridge ${lbv[-1]} $unit, $peer ${pv[-1]} $unit${BENCH_CPU:+ (CPU per I/O: ${lbc[-1]} vs ${pc[-1]} µs)}"
	done
	spread="$(bench_round_ratios lbv pv)"
	if [ -n "$spread" ]; then
		note="${note:+$note; }$spread"
	fi
	steal="$(bench_steal_since "$steal0")"
	if [ -n "$steal" ]; then
		note="${note:+$note; }$steal"
	fi
	bench_record "$test" "$unit" "$(bench_median "${lbv[@]}")" "$(bench_median "${pv[@]}")" "$peer" "$bar" "$note"
	if [ -n "${BENCH_CPU:-}" ]; then
		# The initiator's own cost: user+system CPU of the whole process
		# (login included) per I/O; lower is better, so the ratio is
		# peer/lunbridge (>= 1: lunbridge spends less per I/O).
		# BENCH_CPU_WHO names whose CPU it is (default: the initiator);
		# BENCH_CPU_BAR sets a bar on that ratio (2.0: at most half).
		BENCH_INVERT=1 bench_record "$test: ${BENCH_CPU_WHO:-initiator} CPU per I/O" "us/IO" "$(bench_median "${lbc[@]}")" \
			"$(bench_median "${pc[@]}")" "$peer" "${BENCH_CPU_BAR:--}" "ratio = $peer/lunbridge, >= 1 means lunbridge spends less CPU per I/O"
	fi
	if [ -n "${BENCH_SYSC:-}" ]; then
		# perf stat over each whole process (login included).
		BENCH_INVERT=1 bench_record "$test: system calls per I/O" "calls/IO" "$(bench_median "${lbs[@]}")" \
			"$(bench_median "${ps[@]}")" "$peer" - "reported, no bar (perf stat raw_syscalls:sys_enter); ratio = $peer/lunbridge"
		BENCH_INVERT=1 bench_record "$test: context switches per I/O" "cs/IO" "$(bench_median "${lbx[@]}")" \
			"$(bench_median "${px[@]}")" "$peer" - "reported, no bar (perf stat context-switches); ratio = $peer/lunbridge"
	fi
}

# bench_cpu_snap: "STEAL TOTAL" jiffies of all CPUs from /proc/stat.
bench_cpu_snap() {
	awk '/^cpu / { t = 0; for (i = 2; i <= NF; i++) t += $i; print $9, t; exit }' /proc/stat
}

# bench_steal_since SNAP: "steal 12%" — the share of CPU time the
# hypervisor took from this machine since SNAP (bench_cpu_snap). On a
# virtual machine whose host is busy, the rounds then run on a fraction
# of the cores they were measured with elsewhere, and ratios between
# programs that share them drift; empty on bare metal (no steal at all).
bench_steal_since() {
	local s0 t0 s1 t1
	read -r s0 t0 <<<"$1"
	read -r s1 t1 <<<"$(bench_cpu_snap)"
	awk -v s="$((s1 - s0))" -v t="$((t1 - t0))" 'BEGIN { if (t > 0 && s > 0) printf "steal %.0f%%\n", 100*s/t }'
}

# bench_round_ratios LB_ARRAY PEER_ARRAY: "rounds 0.93-1.12" — the range of
# the per-round ratios (round i's lunbridge over round i's peer), which says
# how far one run's ratio can be trusted; empty with fewer than 2 rounds.
bench_round_ratios() {
	local -n _l="$1" _p="$2"
	local i out=()
	for ((i = 0; i < ${#_l[@]}; i++)); do
		out+=("$(awk -v a="${_l[i]}" -v b="${_p[i]:-}" 'BEGIN {
			if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b+0 > 0) printf "%.2f", a/b }')")
	done
	# (awk, not grep, filters: no match must not fail under pipefail)
	printf '%s\n' "${out[@]}" | awk '/^[0-9.]+$/' | sort -g | awk '{v[NR]=$1} END {
		if (NR >= 2) printf "rounds %s-%s\n", v[1], v[NR] }'
}

# bench_timed_mbps BYTES CMD...: run CMD, print BYTES/seconds in MB/s
# (MB = 10^6 bytes), "n/a" when it fails.
bench_timed_mbps() {
	local bytes="$1" t0 t1
	shift
	t0="$(bench_now)"
	if ! timeout -s KILL 600 "$@" >"$BENCH_TMP/timed.out" 2>"$BENCH_TMP/timed.err"; then
		lb_log "failed: $* — $(tail -n 3 "$BENCH_TMP/timed.err")"
		echo "n/a"
		return 0
	fi
	t1="$(bench_now)"
	awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN { printf "%.1f\n", b/(z-a)/1e6 }'
}

# bench_max_rss_mib CMD...: run CMD under /usr/bin/time -v; prints max RSS in MiB.
bench_max_rss_mib() {
	/usr/bin/time -v -o "$BENCH_TMP/time.txt" "$@" >"$BENCH_TMP/rss-cmd.out" 2>"$BENCH_TMP/rss-cmd.err" ||
		lb_log "rss run failed: $(tail -n 2 "$BENCH_TMP/rss-cmd.err")"
	awk -F: '/Maximum resident set size/ { printf "%.1f\n", $2/1024 }' "$BENCH_TMP/time.txt"
}

# bench_record_limit TEST VALUE_MiB LIMIT_MiB: a bound, not a ratio.
bench_record_limit() {
	local test="$1" v="$2" lim="$3" verdict
	verdict="$(awk -v v="$v" -v l="$lim" 'BEGIN { if (v !~ /^[0-9.]+$/) print "-"; else print (v+0 < l+0) ? "pass" : "below" }')"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$BENCH_PART" "$test" "MiB" "$v" "(limit)" "$lim" \
		"-" "< $lim MiB" "$verdict" "peak RSS" >>"$BENCH_RESULTS"
	lb_log "   => $test: peak RSS $v MiB (limit $lim MiB) $verdict"
}
