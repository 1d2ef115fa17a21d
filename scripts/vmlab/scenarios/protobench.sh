# protobench: one RAM-backed disk exported by both kernel targets, for benching iSCSI against
# NVMe/TCP on equal ground: /dev/loop0 over a sparse tmpfs file, exported by LIO (iblock
# backstore, LUN 0 of iqn.2003-01.org.linux-iscsi.vmlab:bench, portal 0.0.0.0:3260) and by nvmet
# (bdev namespace 1 of nqn.2026-12.org.lunbridge:bench, tcp 0.0.0.0:4420). Prints READY, then
# serves the host's command channel until "stop".
# Parameters:
#   lunbridge.bench.size_mb=N   size of the disk (default 128)
. /scenarios/lib.sh

SIZE_MB=$(param bench.size_mb 128)
IQN=iqn.2003-01.org.linux-iscsi.vmlab:bench
NQN=nqn.2026-12.org.lunbridge:bench

run_to 30 modprobe -a configfs target_core_mod iscsi_target_mod target_core_iblock nvmet nvmet_tcp loop crc32c_generic
grep -q configfs /proc/mounts || run_to 10 mount -t configfs none /sys/kernel/config
w() { printf %s "$1" >"$2" 2>/tmp/w.err || fail "write '$1' > $2: $(cat /tmp/w.err)"; }

mkdir -p /tmp/bench
run_to 10 truncate -s ${SIZE_MB}M /tmp/bench/disk.img
[ -b /dev/loop0 ] || mknod /dev/loop0 b 7 0
run_to 10 losetup /dev/loop0 /tmp/bench/disk.img

# nvmet first: it opens the device shared; LIO's iblock opens it exclusively.
N=/sys/kernel/config/nvmet
S=$N/subsystems/$NQN
mkdir $S || fail "mkdir subsystem"
w 1 $S/attr_allow_any_host
mkdir $S/namespaces/1 || fail "mkdir ns"
w /dev/loop0 $S/namespaces/1/device_path
w 1 $S/namespaces/1/enable
P=$N/ports/1
mkdir $P || fail "mkdir port"
w tcp $P/addr_trtype
w ipv4 $P/addr_adrfam
w 0.0.0.0 $P/addr_traddr
w 4420 $P/addr_trsvcid
ln -s $S $P/subsystems/$NQN || fail "link subsystem to port"

T=/sys/kernel/config/target
mkdir -p $T/core/iblock_0/disk || fail "mkdir iblock"
w "udev_path=/dev/loop0" $T/core/iblock_0/disk/control
w vmlab-bench0 $T/core/iblock_0/disk/wwn/vpd_unit_serial
w 1 $T/core/iblock_0/disk/enable
TPG=$T/iscsi/$IQN/tpgt_1
mkdir -p $TPG/lun/lun_0 || fail "mkdir $TPG"
ln -s $T/core/iblock_0/disk $TPG/lun/lun_0/disk || fail "link lun 0"
mkdir $TPG/np/0.0.0.0:3260 || fail "portal"
w 1 $TPG/attrib/generate_node_acls
w 1 $TPG/attrib/cache_dynamic_acls
w 0 $TPG/attrib/demo_mode_write_protect
w 0 $TPG/attrib/authentication
w 1 $TPG/enable

log "bench disk /dev/loop0 (${SIZE_MB} MiB in RAM): iSCSI $IQN lun 0 on :3260, NVMe/TCP $NQN ns 1 on :4420"
echo "=== VMLAB READY ==="
serve_commands
exit 0
