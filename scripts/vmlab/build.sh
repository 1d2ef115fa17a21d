#!/bin/bash
# build.sh — build (or reuse) the cached VM-lab kernel and base initramfs.
#
# Everything comes from Debian packages: qemu-system-x86, busybox-static, kmod, cpio, xz-utils
# (installed without recommends when missing) and the versioned kernel package behind
# linux-image-amd64 (apt-get download + dpkg -x, never installed).
#
# Output (cached under ${XDG_CACHE_HOME:-$HOME/.cache}/lunbridge-vmlab/KERNELVERSION/, reruns are free):
#   vmlinux         uncompressed kernel (PVH entry: boots ~2x faster than vmlinuz under TCG)
#   base.cpio.gz    busybox, modules (+ modules.dep closure), mke2fs + its libraries, /dev/console
#   base/           the directory base.cpio.gz was made from
# On success the last lines of stdout are shell assignments:
#   VMLAB_DIR=... VMLAB_KERNEL=... VMLAB_BASE=... VMLAB_KVER=...
#
# Environment: VMLAB_CACHE (override the cache root), VMLAB_NO_INSTALL=1 (never call apt-get;
# fail instead), VMLAB_REBUILD=1 (drop the cached base and rebuild it), VMLAB_KPKG (another
# versioned kernel package, e.g. linux-image-6.12.118+deb12-amd64, or a meta-package such as
# linux-image-6.12-amd64, resolved like linux-image-amd64; cached in its own directory).
set -euo pipefail

# Bump when the contents of the base change (forces a rebuild of cached bases).
BASE_FORMAT=4
MODULES="virtio_pci virtio_net nbd configfs target_core_mod iscsi_target_mod target_core_file
target_core_iblock target_core_pscsi crc32c_generic crct10dif_generic ext4 loop nvmet nvmet_tcp"

# put SRC DST: copy SRC (dereferenced) to DST, replacing DST itself if it is a symlink
put() { rm -f "$2"; cp -L "$1" "$2"; }
log() { echo "vmlab-build: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
t() { timeout "$@"; }
trap 'log "ERROR: command failed (line $LINENO, rc $?)"' ERR

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
[ -x /bin/busybox ] && grep -qx modprobe <(/bin/busybox --list 2>/dev/null) || need_pkgs+=(busybox-static)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v xz >/dev/null || need_pkgs+=(xz-utils)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  [ "${VMLAB_NO_INSTALL:-}" = 1 ] && die "missing packages: ${need_pkgs[*]}"
  [ "$(id -u)" = 0 ] || die "missing packages (need root to install): ${need_pkgs[*]}"
  log "installing ${need_pkgs[*]}"
  if ! t 600 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2; then
    t 300 apt-get update -q >&2
    t 600 env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need_pkgs[@]}" >&2
  fi
fi
# busybox-static installs /bin/busybox; make sure it really is static.
BUSYBOX=/bin/busybox
file -L "$BUSYBOX" 2>/dev/null | grep -q 'dynamically linked' && die "$BUSYBOX is not static (install busybox-static)"

# Resolve linux-image-amd64 (or $VMLAB_KPKG) -> linux-image-X.Y.Z-N-amd64.
WANT=${VMLAB_KPKG:-linux-image-amd64}
case $WANT in
  linux-image-[0-9]*.[0-9]*.[0-9]*) KPKG=$WANT;; # versioned: linux-image-6.12.118+deb12-amd64
  linux-image-*) KPKG=$(apt-cache depends "$WANT" 2>/dev/null | awk '/Depends: linux-image-[0-9]/{print $2; exit}');;
  *) die "VMLAB_KPKG=$WANT is not a linux-image-* package";;
esac
[ -n "$KPKG" ] || die "cannot resolve $WANT (apt-get update?)"
KVER=${KPKG#linux-image-}

CACHE_ROOT=${VMLAB_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/lunbridge-vmlab}
DIR=$CACHE_ROOT/$KVER
mkdir -p "$DIR"
exec 9>"$DIR/.lock"
t 900 flock 9 || die "timeout waiting for build lock $DIR/.lock"

ROOT=$DIR/root
if [ ! -e "$DIR/.root-ok" ]; then
  log "fetching $KPKG"
  rm -rf "$ROOT" "$DIR"/*.deb
  (cd "$DIR" && t 600 apt-get download "$KPKG" >&2) || die "apt-get download $KPKG failed"
  mkdir -p "$ROOT"
  t 300 dpkg -x "$DIR"/"$KPKG"_*.deb "$ROOT"
  t 300 depmod -b "$ROOT" "$KVER"
  rm -f "$DIR"/*.deb
  touch "$DIR/.root-ok"
fi

if [ ! -s "$DIR/vmlinux" ]; then
  log "extracting vmlinux"
  VMLINUZ=$ROOT/boot/vmlinuz-$KVER
  # 6.1 is xz-compressed, 6.12 zstd: the first stream that decompresses to an ELF is vmlinux.
  OFF=$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$VMLINUZ" | head -n1 | cut -d: -f1 || true)
  if [ -n "$OFF" ]; then
    tail -c +$((OFF + 1)) "$VMLINUZ" | t 300 xz -dc --single-stream > "$DIR/vmlinux.tmp" || true
  else
    command -v zstd >/dev/null || die "$VMLINUZ is not xz-compressed and zstd is missing (apt-get install zstd)"
    for OFF in $(LC_ALL=C grep -obUaP '\x28\xb5\x2f\xfd' "$VMLINUZ" | head -n4 | cut -d: -f1); do
      tail -c +$((OFF + 1)) "$VMLINUZ" | t 300 zstd -dcq 2>/dev/null > "$DIR/vmlinux.tmp" || true
      [ "$(head -c 4 "$DIR/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] && break
    done
  fi
  [ "$(head -c 4 "$DIR/vmlinux.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || die "vmlinux extraction failed"
  mv "$DIR/vmlinux.tmp" "$DIR/vmlinux"
fi

# ---- base initramfs -------------------------------------------------------------------------
STAMP="format=$BASE_FORMAT modules=$(echo $MODULES) busybox=$(md5sum < $BUSYBOX | cut -c1-12) mke2fs=$(md5sum < /sbin/mke2fs | cut -c1-12)"
BASE=$DIR/base
if [ "${VMLAB_REBUILD:-}" = 1 ] || [ ! -s "$DIR/base.cpio.gz" ] || [ "$(cat "$DIR/base.stamp" 2>/dev/null)" != "$STAMP" ]; then
  log "building base initramfs"
  rm -rf "$BASE" "$DIR/base.cpio.gz" "$DIR/base.stamp"
  mkdir -p "$BASE"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,run,tmp,mnt,root,scenarios,lib64,lib/x86_64-linux-gnu}
  cp "$BUSYBOX" "$BASE/bin/busybox"
  for a in $("$BUSYBOX" --list-full); do
    [ -e "$BASE/$a" ] || ln -s /bin/busybox "$BASE/$a"
  done
  ln -sf /bin/busybox "$BASE/sbin/modprobe"

  # kernel modules: the modules.dep closure of $MODULES (built-ins need nothing)
  MD=$ROOT/lib/modules/$KVER
  declare -A seen=()
  want=()
  resolve() { # name -> relative path in modules.dep (or empty if built in)
    local n=${1//-/_} re
    re=$(echo "$n" | sed 's/_/[-_]/g')
    grep -E "(^|/)${re}\.ko(\.[a-z]+)?:" "$MD/modules.dep" | head -n1 | cut -d: -f1 || true # none: built in (6.12: virtio_pci, crct10dif_generic)
  }
  add() { # relpath
    local p=$1 d
    [ -n "${seen[$p]:-}" ] && return 0
    seen[$p]=1; want+=("$p")
    for d in $(grep -E "^${p//./\\.}:" "$MD/modules.dep" | cut -d: -f2-); do add "$d"; done
  }
  for m in $MODULES; do
    p=$(resolve "$m")
    if [ -z "$p" ]; then
      n=${m//-/_}
      grep -qE "/${n}\.ko$|/${m}\.ko$" "$MD/modules.builtin" && { log "module $m is built in"; continue; }
      die "module $m not found in $KPKG"
    fi
    add "$p"
  done
  for p in "${want[@]}"; do
    mkdir -p "$BASE/lib/modules/$KVER/$(dirname "$p")"
    case $p in
      *.ko.xz) xz -dc "$MD/$p" > "$BASE/lib/modules/$KVER/${p%.xz}";;
      *.ko.zst) zstd -dqc "$MD/$p" > "$BASE/lib/modules/$KVER/${p%.zst}";;
      *) cp "$MD/$p" "$BASE/lib/modules/$KVER/$p";;
    esac
  done
  cp "$MD"/modules.builtin* "$MD/modules.order" "$BASE/lib/modules/$KVER/" 2>/dev/null || true
  t 120 depmod -b "$BASE" "$KVER"
  log "modules: ${#want[@]} files ($(du -sh "$BASE/lib/modules" | cut -f1))"

  # mke2fs (ext4 with journal; busybox mkfs.ext2 cannot) + its shared libraries
  # (the busybox applet links point at /bin/busybox: never copy THROUGH them — put() unlinks first)
  put /sbin/mke2fs "$BASE/sbin/mke2fs"
  rm -f "$BASE/sbin/mkfs.ext4"; ln -s mke2fs "$BASE/sbin/mkfs.ext4"
  for lib in $(ldd /sbin/mke2fs | grep -oE '/[^ ]+'); do
    mkdir -p "$BASE/$(dirname "$lib")"; put "$lib" "$BASE/$lib"
  done
  [ -e /etc/mke2fs.conf ] && put /etc/mke2fs.conf "$BASE/etc/mke2fs.conf"
  printf 'root:x:0:0:root:/root:/bin/sh\n' > "$BASE/etc/passwd"
  printf 'root:x:0:\n' > "$BASE/etc/group"
  mknod -m 600 "$BASE/dev/console" c 5 1
  mknod -m 666 "$BASE/dev/null" c 1 3
  (cd "$BASE" && find . -mindepth 1 | LC_ALL=C sort | t 300 cpio -o -H newc --quiet -R 0:0 | gzip -1 > "$DIR/base.cpio.gz.tmp")
  mv "$DIR/base.cpio.gz.tmp" "$DIR/base.cpio.gz"
  echo "$STAMP" > "$DIR/base.stamp"
  log "base.cpio.gz: $(du -h "$DIR/base.cpio.gz" | cut -f1)"
fi

echo "VMLAB_DIR=$DIR"
echo "VMLAB_KVER=$KVER"
echo "VMLAB_KERNEL=$DIR/vmlinux"
echo "VMLAB_BASE=$DIR/base.cpio.gz"
