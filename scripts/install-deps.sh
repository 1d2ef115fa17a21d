#!/usr/bin/env bash
# Install the real components lunbridge tests and demos use (Debian 12, root).
# Idempotent: when every package is present it touches nothing and prints
# "all present". Otherwise it runs apt-get update when the package lists are
# missing or older than a day, installs what is missing and prints one line.
# Extra package names may be given as arguments. Go is not installed here.
set -euo pipefail
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

pkgs=(tgt istgt libiscsi-bin qemu-utils qemu-block-extra libnbd-bin nbdkit fio
	tshark fuse3 nftables e2fsprogs util-linux iproute2 man-db systemd make "$@")

command -v dpkg-query >/dev/null 2>&1 || lb_die "dpkg-query not found: this script supports Debian/Ubuntu only"

missing=()
for p in "${pkgs[@]}"; do
	lb_pkg_installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "all present"
	exit 0
fi
lb_need_root "installing: ${missing[*]}"

export DEBIAN_FRONTEND=noninteractive
log="$(mktemp /tmp/lunbridge-install-deps.XXXXXX)"
trap 'rm -f "$log"' EXIT
apt_opts=(-q -y -o DPkg::Lock::Timeout=300 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

fresh="$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -mmin -1440 2>/dev/null | head -n1)"
if [ -z "$fresh" ]; then
	if ! apt-get -q -o DPkg::Lock::Timeout=300 update >"$log" 2>&1; then
		tail -n 20 "$log" >&2
		lb_die "apt-get update failed (output above); cannot install: ${missing[*]}"
	fi
fi
if ! apt-get "${apt_opts[@]}" install "${missing[@]}" >>"$log" 2>&1; then
	tail -n 30 "$log" >&2
	lb_die "apt-get install failed (output above) for: ${missing[*]}"
fi
still=()
for p in "${missing[@]}"; do
	lb_pkg_installed "$p" || still+=("$p")
done
[ ${#still[@]} -eq 0 ] || lb_die "apt-get reported success but these are not installed: ${still[*]}"
echo "installed: ${missing[*]}"
