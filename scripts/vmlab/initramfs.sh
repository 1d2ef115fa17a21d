#!/bin/bash
# initramfs.sh OUT BASE.cpio.gz [--lunbridge PATH] [--add SRC=DST]...
# Assemble the per-run initramfs: the cached base archive followed by an overlay archive
# (cpio newc | gzip -1) holding /init, /scenarios/*, optionally /bin/lunbridge (a static binary)
# and extra files. The kernel unpacks concatenated archives in order, so the base is reused as-is.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { echo "usage: $0 OUT BASE.cpio.gz [--lunbridge PATH] [--add SRC=DST]..." >&2; exit 2; }
OUT=$1 BASE=$2; shift 2
STAGE=$(mktemp -d "${TMPDIR:-/tmp}/vmlab-overlay.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/scenarios" "$STAGE/bin"
install -m 0755 "$HERE/init" "$STAGE/init"
install -m 0644 "$HERE"/scenarios/*.sh "$STAGE/scenarios/"
while [ $# -gt 0 ]; do
  case $1 in
    --lunbridge)
      [ -n "${2:-}" ] || { shift 2; continue; }
      [ -f "$2" ] || { echo "initramfs.sh: no such file: $2" >&2; exit 1; }
      if file -L "$2" 2>/dev/null | grep -q 'dynamically linked'; then
        echo "initramfs.sh: $2 is dynamically linked; build it with CGO_ENABLED=0" >&2; exit 1
      fi
      install -m 0755 "$2" "$STAGE/bin/lunbridge"; shift 2;;
    --add)
      src=${2%%=*} dst=${2#*=}
      mkdir -p "$STAGE/$(dirname "$dst")"; cp -a "$src" "$STAGE/$dst"; shift 2;;
    *) echo "initramfs.sh: unknown argument $1" >&2; exit 2;;
  esac
done
tmp=$OUT.tmp.$$
cp "$BASE" "$tmp"
(cd "$STAGE" && find . -mindepth 1 | LC_ALL=C sort | timeout 120 cpio -o -H newc --quiet -R 0:0 | gzip -1 >> "$tmp")
mv "$tmp" "$OUT"
