#!/usr/bin/env bash
# pull (issue 5): `lunbridge pull` vs `qemu-img convert` (plain, and with
# -m 16 -W) from the same tgtd RAM LUN, alternating, on
#   1. a fully written LUN (random data)              bar >= 1.5x
#   2. a thick LUN whose blocks are 90% zeros         bar >= 1.2x, output sparse
#   3. a thin LUN (thin_provisioning=1, GET LBA STATUS) with 10% written
#                                                     bar >= 1.5x, output no larger on disk
# and `lunbridge push` vs `qemu-img convert -n` into the LUN   bar >= 1.2x;
# peak RSS of pull (bar < 100 MiB). Rates are BENCH_SIZE / wall time.
# The rows above time `pull --checksum none`; the checksum rows (issue 24
# item 4) time pull with its default checksum (the blkhash, FILE.blksum)
# against qemu-img (bar 1.5x on the thin LUN) and against --checksum none
# (bar 0.9x on the full LUN: the checksum costs at most 10 %), with
# --checksum sha256 reported beside.
#
# Every pull scenario writes its output twice over: to a disk-backed file
# system (BENCH_DISK_DIR, default /var/tmp: where a backup goes) and to
# tmpfs (/dev/shm). On disk, lunbridge writes with O_DIRECT and fsyncs before
# it exits; qemu-img's default (cache=unsafe for convert) leaves its output
# in the page cache, unflushed. Each disk run starts after `sync` (untimed),
# so no run pays for the previous one's write-back; `qemu-img -t none`
# (qemu's O_DIRECT) is reported beside, without a bar. On tmpfs both tools
# pay the same kernel work per byte (page allocation and the copy into it).
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/common.sh"
bench_init pull

bench_target pull "$BENCH_SIZE"
URL="${T_URL[pull]}"
FILE="${T_FILE[pull]}"
MIB=$((BENCH_SIZE_BYTES >> 20))

# The disk-backed output directory, when there is one with room for two images.
DISK_DIR=""
disk_base="${BENCH_DISK_DIR:-/var/tmp}"
if [ -d "$disk_base" ] && [ "$(stat -f -c %T "$disk_base")" != tmpfs ] &&
	[ "$(df -B1 --output=avail "$disk_base" | tail -1)" -gt $((3 * BENCH_SIZE_BYTES)) ]; then
	DISK_DIR="$(mktemp -d "$disk_base/lunbridge-bench.XXXXXX")"
	bench_on_exit rm -rf "$DISK_DIR"
	DISK_FS="$(findmnt -n -o FSTYPE --target "$DISK_DIR" 2>/dev/null || stat -f -c %T "$DISK_DIR")"
else
	lb_log "no disk-backed file system with room at $disk_base (BENCH_DISK_DIR): pulls go to tmpfs only"
fi

OUT="$BENCH_SHM/out.raw"
SYNC=0
fresh() { rm -f "$OUT" "$OUT".*; [ "$SYNC" = 1 ] && sync; return 0; }
lb_pull() { fresh; bench_timed_mbps "$BENCH_SIZE_BYTES" "$LB" pull --checksum none "$URL" "$OUT"; }
qi_pull() { fresh; bench_timed_mbps "$BENCH_SIZE_BYTES" qemu-img convert -O raw "$URL" "$OUT"; }
qw_pull() { fresh; bench_timed_mbps "$BENCH_SIZE_BYTES" qemu-img convert -m 16 -W -O raw "$URL" "$OUT"; }
qn_pull() { fresh; bench_timed_mbps "$BENCH_SIZE_BYTES" qemu-img convert -t none -O raw "$URL" "$OUT"; }
du_mib() { du -B1 "$OUT" 2>/dev/null | awk '{ printf "%.1f\n", $1/1048576 }'; }

lbd_pull() { fresh; bench_timed_mbps "$BENCH_SIZE_BYTES" "$LB" pull "$URL" "$OUT"; }
lbs_pull() { fresh; bench_timed_mbps "$BENCH_SIZE_BYTES" "$LB" pull --checksum sha256 "$URL" "$OUT"; }

# checksum_rows LABEL BAR-vs-qemu-img BAR-vs-none: pull to tmpfs with the
# default checksum (blkhash), without one, with sha256, and qemu-img,
# alternating the order every round.
checksum_rows() {
	local label="$1" barq="$2" barn="$3" i a b c d who order
	local dv=() nv=() qv=() sv=()
	OUT="$BENCH_SHM/out.raw"
	SYNC=0
	lb_log " - pull with checksums: $label -> tmpfs"
	lbd_pull >/dev/null
	for ((i = 1; i <= BENCH_ROUNDS; i++)); do
		order="d n q s"
		((i % 2)) || order="s q n d"
		for who in $order; do
			case "$who" in
			d) a="$(lbd_pull)"; dv+=("$a") ;;
			n) b="$(lb_pull)"; nv+=("$b") ;;
			q) c="$(qi_pull)"; qv+=("$c") ;;
			s) d="$(lbs_pull)"; sv+=("$d") ;;
			esac
		done
		lb_log "   round $i: pull (blkhash) $a MB/s, --checksum none $b, qemu-img $c, --checksum sha256 $d"
	done
	fresh
	bench_record "pull $label -> tmpfs, default checksum (blkhash)" MB/s "$(bench_median "${dv[@]}")" "$(bench_median "${qv[@]}")" \
		"qemu-img convert" "$barq" "$(bench_round_ratios dv qv)"
	bench_record "pull $label -> tmpfs, default checksum (blkhash)" MB/s "$(bench_median "${dv[@]}")" "$(bench_median "${nv[@]}")" \
		"lunbridge --checksum none" "$barn" "$(bench_round_ratios dv nv)"
	bench_record "pull $label -> tmpfs, --checksum sha256" MB/s "$(bench_median "${sv[@]}")" "$(bench_median "${nv[@]}")" \
		"lunbridge --checksum none" - "reported, no bar: sha256sum's checksum, one core, every byte"
}

# pull3 LABEL BAR [du] [ceiling]: the scenario to disk (when there is one),
# then to tmpfs (the ceiling rows go with the tmpfs runs: on disk the device
# has its own limit).
pull3() {
	if [ -n "$DISK_DIR" ]; then
		local x=""
		[[ " ${3:-} ${4:-} " == *" du "* ]] && x=du
		OUT="$DISK_DIR/out.raw" SYNC=1 pull3at "$1 -> disk ($DISK_FS)" "$2" "$x" tnone
	fi
	OUT="$BENCH_SHM/out.raw" SYNC=0 pull3at "$1 -> tmpfs" "$2" "${3:-}" "${4:-}"
}

# pull3at LABEL BAR [du] [ceiling] [tnone]: alternate lunbridge, qemu-img,
# qemu-img -m 16 -W (and qemu-img -t none) writing $OUT.
pull3at() {
	local label="$1" bar="$2" extras="${3:-} ${4:-} ${5:-}" i a b c d
	local lbv=() qv=() wv=() nv=() lbdu=() qdu=() wdu=()
	lb_log " - pull: $label"
	lb_pull >/dev/null # warm-up (untimed): the first read after a refill is slower
	local order who
	for ((i = 1; i <= BENCH_ROUNDS; i++)); do
		# lunbridge first in odd rounds, last in even ones (see bench_pair).
		order="lb qi qw"
		[[ " $extras " == *" tnone "* ]] && order="$order qn"
		((i % 2)) || order="$(echo "$order" | tr ' ' '\n' | tac | tr '\n' ' ')"
		d=""
		for who in $order; do
			case "$who" in
			lb) a="$(lb_pull)"; lbv+=("$a"); lbdu+=("$(du_mib)") ;;
			qi) b="$(qi_pull)"; qv+=("$b"); qdu+=("$(du_mib)") ;;
			qw) c="$(qw_pull)"; wv+=("$c"); wdu+=("$(du_mib)") ;;
			qn) d="$(qn_pull)"; nv+=("$d") ;;
			esac
		done
		lb_log "   round $i: lunbridge $a MB/s (${lbdu[-1]} MiB on disk), qemu-img $b (${qdu[-1]} MiB), qemu-img -m16 -W $c (${wdu[-1]} MiB)${d:+, qemu-img -t none $d}"
	done
	fresh
	if [[ " $extras " == *" ceiling "* ]]; then
		# The host's ceiling for this bar: how fast the target serves the
		# LUN at all. iscsi-perf reads 1 MiB at QD8 and throws the data
		# away (no output file, no copy out of libiscsi), so no pull, ours
		# or qemu-img's, can go faster; its rate over qemu-img's is the
		# best ratio this host allows.
		local pv=() p
		for ((i = 1; i <= BENCH_ROUNDS; i++)); do
			p="$(peer_iscsi_perf 2048 8 "$URL" | awk '{ print $2 }')"; pv+=("$p")
			lb_log "   round $i: target serving rate (iscsi-perf 1M QD8, data discarded) $p MB/s"
		done
		bench_record "ceiling: pull $label, target serving rate (iscsi-perf 1M QD8, no output) vs qemu-img" MB/s \
			"$(bench_median "${pv[@]}")" "$(bench_median "${qv[@]}")" "qemu-img convert" - \
			"reported, no bar: the best pull/qemu-img ratio this host allows (the lunbridge column is iscsi-perf's rate)"
	fi
	bench_record "pull $label" MB/s "$(bench_median "${lbv[@]}")" "$(bench_median "${qv[@]}")" "qemu-img convert" "$bar" \
		"$(bench_round_ratios lbv qv)"
	bench_record "pull $label" MB/s "$(bench_median "${lbv[@]}")" "$(bench_median "${wv[@]}")" "qemu-img -m16 -W" "$bar" \
		"$(bench_round_ratios lbv wv)"
	if [ "${#nv[@]}" -gt 0 ]; then
		bench_record "pull $label" MB/s "$(bench_median "${lbv[@]}")" "$(bench_median "${nv[@]}")" "qemu-img -t none" - \
			"reported, no bar: qemu-img with O_DIRECT output (not its default)"
	fi
	if [[ " $extras " == *" du "* ]]; then
		BENCH_INVERT=1 bench_record "pull $label: output on disk" "MiB" "$(bench_median "${lbdu[@]}")" \
			"$(bench_median "${qdu[@]}")" "qemu-img convert" 1.0 "ratio = qemu-img/lunbridge; >= 1 means no larger"
	fi
}

# Touch memory once, untimed: on a virtual machine the host backs a guest
# page on its first write, and a pull to tmpfs is the first writer of most
# of the pages it gets (a first 16 GB dd into /dev/shm ran at 380 MB/s, a
# second at 1.6 GB/s). Without this the first rounds time the hypervisor.
lb_log "touching $((4 * MIB)) MiB of tmpfs once (untimed)"
dd if=/dev/zero of="$BENCH_SHM/pretouch" bs=1M count=$((4 * MIB)) status=none 2>/dev/null || true
rm -f "$BENCH_SHM/pretouch"

# 1. Fully written LUN.
lb_log "filling the LUN with random data ($BENCH_SIZE)"
dd if=/dev/urandom of="$FILE" bs=1M count="$MIB" conv=notrunc status=none
pull3 "full LUN" 1.5 ceiling
checksum_rows "full LUN" - 0.9

lb_log " - peak RSS: pull of the full LUN"
OUT="$BENCH_SHM/out.raw"
rm -f "$OUT" "$OUT".*
rss="$(bench_max_rss_mib "$LB" pull --checksum none "$URL" "$OUT")"
bench_record_limit "pull full LUN max RSS" "$rss" 100

# 2. Push: lunbridge push vs qemu-img convert -n (existing target) of the same
# random image.
IN="$BENCH_SHM/in.raw"
cp "$FILE" "$IN"
rm -f "$OUT" "$OUT".*
lb_push() { bench_timed_mbps "$BENCH_SIZE_BYTES" "$LB" push --yes --checksum none "$IN" "$URL"; }
qi_push() { bench_timed_mbps "$BENCH_SIZE_BYTES" qemu-img convert -n -f raw -O raw "$IN" "$URL"; }
qw_push() { bench_timed_mbps "$BENCH_SIZE_BYTES" qemu-img convert -n -m 16 -W -f raw -O raw "$IN" "$URL"; }
lb_log " - push: full image"
lbv=() qv=() wv=()
for ((i = 1; i <= BENCH_ROUNDS; i++)); do
	if ((i % 2)); then
		a="$(lb_push)"; b="$(qi_push)"; c="$(qw_push)"
	else
		c="$(qw_push)"; b="$(qi_push)"; a="$(lb_push)"
	fi
	lbv+=("$a"); qv+=("$b"); wv+=("$c")
	lb_log "   round $i: lunbridge push $a MB/s, qemu-img $b, qemu-img -m16 -W $c"
done
cmp -s "$IN" "$FILE" || lb_log "   WARNING: the LUN's backing file differs from the pushed image"
rm -f "$IN"
bench_record "push full image" MB/s "$(bench_median "${lbv[@]}")" "$(bench_median "${qv[@]}")" "qemu-img convert -n" 1.2 \
	"$(bench_round_ratios lbv qv)"
bench_record "push full image" MB/s "$(bench_median "${lbv[@]}")" "$(bench_median "${wv[@]}")" "qemu-img -n -m16 -W" 1.2 \
	"$(bench_round_ratios lbv wv)"

# write10 FILE: random data in every tenth MiB (10% of the blocks).
write10() {
	local m
	for ((m = 0; m < MIB; m += 10)); do
		dd if=/dev/urandom of="$1" bs=1M count=1 seek="$m" conv=notrunc status=none
	done
}

# 3. Thick LUN, 90% zeros: every block allocated (zeros written), not thin.
lb_log "thick LUN: zeros everywhere, random data in every tenth MiB"
dd if=/dev/zero of="$FILE" bs=1M count="$MIB" conv=notrunc status=none
write10 "$FILE"
pull3 "thick 90% zeros" 1.2 du ceiling

# 4. Thin LUN, 10% written: the backing file is sparse, tgtd answers GET LBA
# STATUS from SEEK_DATA/SEEK_HOLE once thin_provisioning=1.
lb_log "thin LUN: sparse backing file, every tenth MiB written, thin_provisioning=1"
truncate -s 0 "$FILE"
truncate -s "$BENCH_SIZE_BYTES" "$FILE"
write10 "$FILE"
bench_tgtadm pull --mode logicalunit --op update --tid 1 --lun 1 --params thin_provisioning=1 ||
	lb_die "tgtadm: thin_provisioning=1 failed"
pull3 "thin 10% written" 1.5 du
checksum_rows "thin 10% written" 1.5 -

bench_done
