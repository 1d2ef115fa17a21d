# nvmet: configure the kernel NVMe/TCP target (nvmet, nvmet-tcp) through configfs, print READY,
# then serve the host's command channel until the host writes "stop" (or kills the VM).
#
# Subsystem nqn.2026-12.org.lunbridge:vmlab (any host allowed), port 1 = TCP 0.0.0.0:3260 (the
# port qemu's hostfwd forwards; the discovery subsystem answers on it too). Both namespaces live
# in the guest's RAM (tmpfs):
#   nsid 1: block backend on /dev/loop0 over a sparse tmpfs file: 512-byte blocks
#   nsid 2: file backend on a sparse tmpfs file (buffered_io): 4096-byte blocks (tmpfs i_blkbits)
# Each namespace gets an NGUID (device_nguid; nvmet leaves it zero by default).
# Deallocate punches holes (loop discard / fallocate), so deallocated blocks read zero.
# Parameters:
#   lunbridge.nvmet.nqn=NQN          subsystem NQN (default above)
#   lunbridge.nvmet.size_mb=N        size of each namespace (default 64)
#   lunbridge.nvmet.ports=2          also port 2 = TCP 0.0.0.0:4420 (multipath; ANA group 1 per port)
. /scenarios/lib.sh

NQN=$(param nvmet.nqn nqn.2026-12.org.lunbridge:vmlab)
SIZE_MB=$(param nvmet.size_mb 64)
PORTS=$(param nvmet.ports 1)

run_to 30 modprobe -a configfs nvmet nvmet_tcp loop crc32c_generic
grep -q configfs /proc/mounts || run_to 10 mount -t configfs none /sys/kernel/config
N=/sys/kernel/config/nvmet
[ -d $N ] || fail "no $N after loading nvmet"

w() { # w VALUE FILE
  printf %s "$1" >"$2" 2>/tmp/w.err || fail "write '$1' > $2: $(cat /tmp/w.err)"
}

mkdir -p /tmp/nvmet
run_to 10 truncate -s ${SIZE_MB}M /tmp/nvmet/ns1.img
run_to 10 truncate -s ${SIZE_MB}M /tmp/nvmet/ns2.img
[ -b /dev/loop0 ] || mknod /dev/loop0 b 7 0
run_to 10 losetup /dev/loop0 /tmp/nvmet/ns1.img

S=$N/subsystems/$NQN
mkdir $S || fail "mkdir subsystem $NQN"
w 1 $S/attr_allow_any_host
printf %s vmlab0001 >$S/attr_serial 2>/dev/null || true
mkdir $S/namespaces/1 || fail "mkdir ns 1"
w /dev/loop0 $S/namespaces/1/device_path
w fa110000-0000-0000-0000-000000000001 $S/namespaces/1/device_nguid
w 1 $S/namespaces/1/enable
mkdir $S/namespaces/2 || fail "mkdir ns 2"
w /tmp/nvmet/ns2.img $S/namespaces/2/device_path
w fa110000-0000-0000-0000-000000000002 $S/namespaces/2/device_nguid
w 1 $S/namespaces/2/buffered_io   # tmpfs has no O_DIRECT
w 1 $S/namespaces/2/enable

P=$N/ports/1
mkdir $P || fail "mkdir port"
w tcp $P/addr_trtype
w ipv4 $P/addr_adrfam
w 0.0.0.0 $P/addr_traddr
w 3260 $P/addr_trsvcid
ln -s $S $P/subsystems/$NQN || fail "link subsystem to port"

# A second port (multipath): same subsystem on tcp 0.0.0.0:4420. Each port has ANA group 1
# (ports/N/ana_groups/1/ana_state: optimized, non-optimized, inaccessible, persistent-loss,
# change), the group every namespace is in.
if [ "$PORTS" -ge 2 ]; then
  P2=$N/ports/2
  mkdir $P2 || fail "mkdir port 2"
  w tcp $P2/addr_trtype
  w ipv4 $P2/addr_adrfam
  w 0.0.0.0 $P2/addr_traddr
  w 4420 $P2/addr_trsvcid
  ln -s $S $P2/subsystems/$NQN || fail "link subsystem to port 2"
fi

log "nvmet $NQN: ns1 $(cat $S/namespaces/1/device_path) ns2 $(cat $S/namespaces/2/device_path) on tcp 0.0.0.0:3260 ($PORTS ports)"
echo "=== VMLAB NVMET nqn=$NQN namespaces=1,2 ns_size=$((SIZE_MB * 1048576)) ==="
echo "=== VMLAB READY ==="
serve_commands
dmesg | grep -i nvmet | tail -n 20
exit 0
