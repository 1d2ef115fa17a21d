# nbd-reconnect: attach and mount, write; kill -9 the bridge (the kernel keeps the device and waits
# for a new socket); `lunbridge attach --reconnect` hands a fresh connection to the same /dev/nbd0;
# the mounted file system must keep working (old and new data intact, no I/O errors).
. /scenarios/lib.sh
. /scenarios/nbd-lib.sh

attach_bg
mkfs_dev
mount_dev
write_file a 8
sync
log "kill -9 bridge pid $BRIDGE_PID at $(uptime_s)s"
kill -9 $BRIDGE_PID
wait $BRIDGE_PID 2>/dev/null
[ -e /sys/block/$NBD/pid ] || log "note: $DEV lost its pid after the bridge died"
[ -e "$DEV" ] || fail "$DEV vanished after the bridge was killed"
sleep 1
attach_bg --reconnect
check_reclaim_safe
write_file b 4
drop_caches
check_file a
check_file b
run_to 60 umount $MNT
mount_dev
check_file a
check_file b
run_to 60 umount $MNT
check_dmesg
detach
exit 0
