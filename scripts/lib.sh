# shellcheck shell=bash
# Shared helpers for lunbridge scripts. Source it: . "$(dirname "$0")/lib.sh"

LB_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
LB_ROOT="$(cd "$LB_SCRIPTS_DIR/.." && pwd)"

lb_log() { printf '%s\n' "$*" >&2; }
lb_die() { printf '%s: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

lb_need_root() {
	[ "$(id -u)" -eq 0 ] || lb_die "must run as root (${1:-this step needs root})"
}

# lb_go: the go binary (PATH or /usr/local/go/bin).
lb_go() {
	if command -v go >/dev/null 2>&1; then
		command go "$@"
	elif [ -x /usr/local/go/bin/go ]; then
		/usr/local/go/bin/go "$@"
	else
		lb_die "go not found (expected in PATH or /usr/local/go/bin)"
	fi
}

# lb_lbtarget ARGS...: run bin/lbtarget when built, else build it from
# ./internal/testrig/targets/cmd/lbtarget into a temporary file (like `go run`, but
# the exit status is passed through) and run that.
lb_lbtarget() {
	if [ -x "$LB_ROOT/bin/lbtarget" ]; then
		"$LB_ROOT/bin/lbtarget" "$@"
		return
	fi
	local d rc=0
	d="$(mktemp -d "${TMPDIR:-/tmp}/lbtarget.XXXXXX")"
	(cd "$LB_ROOT" && lb_go build -o "$d/lbtarget" ./internal/testrig/targets/cmd/lbtarget) || {
		rm -rf "$d"
		lb_die "building lbtarget failed"
	}
	"$d/lbtarget" "$@" || rc=$?
	rm -rf "$d"
	return "$rc"
}

# lb_pkg_installed PKG: is a Debian package installed?
lb_pkg_installed() {
	dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}
