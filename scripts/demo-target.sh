#!/usr/bin/env bash
# scripts/demo-target.sh start|stop|status [STATE_DIR]
#
# start:  install dependencies, start a tgtd with a 1 GiB RAM-backed LUN
#         (/dev/shm) on a loopback port (3260 when free), print its URL.
#         Idempotent: when it already runs, prints the existing URL.
# stop:   stop the target and remove its backing file.
# status: print the URL when running (exit 0), exit 3 when not.
#
# STATE_DIR defaults to $LUNBRIDGE_DEMO_DIR or /tmp/lunbridge-demo-target.
# Uses bin/lbtarget when built, else `go run ./internal/testrig/targets/cmd/lbtarget`.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cmd="${1:-}"
state="${2:-${LUNBRIDGE_DEMO_DIR:-/tmp/lunbridge-demo-target}}"
size="${LUNBRIDGE_DEMO_SIZE:-1G}"

case "$cmd" in
start)
	lb_need_root "tgtd needs root"
	"$LB_SCRIPTS_DIR/install-deps.sh" >&2
	mkdir -p "$state"
	url="$(lb_lbtarget start --kind tgtd --state-dir "$state" --size "$size" --prefer-port 3260 --name "${LUNBRIDGE_DEMO_IQN:-iqn.2026-11.org.lunbridge:demo}")" ||
		lb_die "could not start the demo target (see above)"
	echo "$url"
	lb_log "demo target running; stop it with: $0 stop $state"
	;;
stop)
	lb_lbtarget stop --state-dir "$state"
	;;
status)
	lb_lbtarget status --state-dir "$state"
	;;
*)
	echo "usage: $0 start|stop|status [STATE_DIR]" >&2
	exit 2
	;;
esac
