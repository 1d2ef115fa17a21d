# nbd-attach: lunbridge exposes an iSCSI LUN (target on the host, 10.0.2.2) as the kernel's
# /dev/nbd0 via netlink; make a file system on it, write, re-read after dropping caches, detach.
. /scenarios/lib.sh
. /scenarios/nbd-lib.sh

attach_bg
check_reclaim_safe
mkfs_dev
mount_dev
write_file a 8
mkdir -p $MNT/dir && echo hello >$MNT/dir/hello
sync
run_to 60 umount $MNT
drop_caches
mount_dev
check_file a
[ "$(cat $MNT/dir/hello)" = hello ] || fail "small file lost"
run_to 60 umount $MNT
check_dmesg
detach
exit 0
