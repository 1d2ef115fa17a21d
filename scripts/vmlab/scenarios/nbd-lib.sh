# Shared by nbd-attach.sh and nbd-reconnect.sh (sourced after lib.sh).
# Parameters:
#   lunbridge.url=iscsi://10.0.2.2:PORT/IQN/LUN   the LUN (a target on the host; required)
#   lunbridge.nbd.dev=/dev/nbd0                   the kernel NBD device
#   lunbridge.attach_args=ARG,ARG                 extra arguments for `lunbridge attach` (commas -> spaces)
#   lunbridge.mkfs=ext4|ext2                      file system (default ext4: mke2fs from the host, ext4.ko)
LB=/bin/lunbridge
URL=$(param url "")
DEV=$(param nbd.dev /dev/nbd0)
NBD=$(basename "$DEV")
ATTACH_ARGS=$(param attach_args "" | tr ',' ' ')
FS=$(param mkfs ext4)
MNT=/mnt/nbd

[ -e $LB ] || fail "no /bin/lunbridge in the initramfs (run.sh --lunbridge PATH / Options.Lunbridge; build with CGO_ENABLED=0)"
[ -x $LB ] || fail "/bin/lunbridge is not executable"
timeout 20 $LB help attach >/tmp/help-attach.txt 2>&1 || fail "/bin/lunbridge has no 'attach' command ($(head -n1 /tmp/help-attach.txt))"
timeout 20 $LB help detach >/dev/null 2>&1 || fail "/bin/lunbridge has no 'detach' command"
[ -n "$URL" ] || fail "lunbridge.url=iscsi://10.0.2.2:PORT/IQN/LUN is not set"
run_to 30 modprobe -a nbd ext4
[ -e "$DEV" ] || fail "$DEV missing after modprobe nbd"
mkdir -p $MNT

# attach_bg [ARGS...]: start `lunbridge attach ARGS URL DEV` in the background (BRIDGE_PID), wait until
# the kernel device is connected (sysfs pid + size), fail with the bridge's log if it dies first.
attach_bg() {
  log "lunbridge attach $* $ATTACH_ARGS $URL $DEV"
  $LB attach "$@" $ATTACH_ARGS "$URL" "$DEV" >>/tmp/attach.log 2>&1 &
  BRIDGE_PID=$!
  i=0
  while :; do
    size=$(cat /sys/block/$NBD/size 2>/dev/null)
    if [ -e /sys/block/$NBD/pid ] && [ "${size:-0}" -gt 0 ]; then
      # (after a kill -9 the device stays configured: make sure the new bridge keeps running)
      sleep 1
      kill -0 $BRIDGE_PID 2>/dev/null && break
      tail -n 5 /tmp/attach.log; fail "lunbridge attach $* exited: $(tail -n1 /tmp/attach.log)"
    fi
    kill -0 $BRIDGE_PID 2>/dev/null || { tail -n 5 /tmp/attach.log; fail "lunbridge attach exited before $DEV was connected: $(tail -n1 /tmp/attach.log)"; }
    i=$((i+1)); [ $i -gt 600 ] && fail "$DEV not connected after 60s"
    sleep 0.1
  done
  log "$DEV connected: $((size / 2048)) MiB, bridge pid $BRIDGE_PID, at $(uptime_s)s"
}

# check_reclaim_safe: the bridge is locked in memory (VmLck) and every one of its threads is an
# IO_FLUSHER: PF_MEMALLOC_NOIO|PF_LOCAL_THROTTLE (0x180000) in the flags, field 9 of
# /proc/PID/task/TID/stat (PR_GET_IO_FLUSHER only answers for the calling thread).
check_reclaim_safe() {
  lck=$(awk '/^VmLck:/{print $2}' /proc/$BRIDGE_PID/status)
  [ "${lck:-0}" -gt 0 ] || fail "lunbridge attach is not locked in memory (VmLck ${lck:-?} kB)"
  n=0
  for s in /proc/$BRIDGE_PID/task/*/stat; do
    f=$(awk '{print $9}' "$s" 2>/dev/null)
    [ -n "$f" ] || continue  # thread gone
    [ $((f & 0x180000)) = $((0x180000)) ] || fail "thread $s of lunbridge attach is not an IO_FLUSHER (flags $f)"
    n=$((n+1))
  done
  [ $n -gt 0 ] || fail "no threads of lunbridge attach found in /proc/$BRIDGE_PID/task"
  log "lunbridge attach: VmLck ${lck} kB, all $n threads IO_FLUSHER"
}

# wait_exit PID SECS: wait for a background process; sets EXIT_RC.
wait_exit() {
  i=0
  while kill -0 "$1" 2>/dev/null; do
    i=$((i+1)); [ $i -gt $(($2 * 10)) ] && fail "process $1 still running after $2 s"
    sleep 0.1
  done
  wait "$1"; EXIT_RC=$?
}

detach() {
  run_to 60 $LB detach "$DEV"
  wait_exit $BRIDGE_PID 60
  [ $EXIT_RC = 0 ] || fail "lunbridge attach exited $EXIT_RC after detach: $(tail -n1 /tmp/attach.log)"
  [ -e /sys/block/$NBD/pid ] && fail "$DEV still connected after detach"
  log "detached at $(uptime_s)s"
}

mkfs_dev() {
  case $FS in
    ext4) run_to 300 /sbin/mke2fs -q -F -t ext4 "$DEV";;  # full path: busybox sh prefers its own applets
    ext2) run_to 300 /sbin/mke2fs -q -F -t ext2 "$DEV";;
    *) fail "unknown lunbridge.mkfs=$FS";;
  esac
}

mount_dev() { run_to 60 mount -t "$FS" "$DEV" $MNT; }
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# write_file NAME MIB: random data, fsync'd; remembers its md5 in /tmp/NAME.md5
write_file() {
  run_to 300 dd if=/dev/urandom of=$MNT/$1 bs=1M count=$2 conv=fsync 2>/dev/null
  md5sum <$MNT/$1 >/tmp/$1.md5
}
check_file() {
  [ "$(md5sum <$MNT/$1)" = "$(cat /tmp/$1.md5)" ] || fail "$1: content differs after re-read"
}
check_dmesg() {
  if dmesg | grep -E 'EXT4-fs error|I/O error|Buffer I/O error|blk_update_request' >/tmp/dmesg.err; then
    head -n 5 /tmp/dmesg.err
    fail "kernel reported I/O errors: $(head -n1 /tmp/dmesg.err)"
  fi
}
