# lio: configure the kernel iSCSI target (LIO) through configfs, print READY, then serve the
# host's command channel until the host writes "stop" (or kills the VM).
#
# Target iqn.2003-01.org.linux-iscsi.vmlab:t0, TPG 1, portal 0.0.0.0:3260 (the host reaches it
# through qemu's hostfwd at 127.0.0.1:PORT). LUN 0 = rd_mcp 64 MiB (serial vmlab-rd0),
# LUN 1 = fileio 64 MiB on tmpfs (serial vmlab-fd0).
# Parameters:
#   lunbridge.lio.iqn=IQN                    target name (default above)
#   lunbridge.lio.size_mb=N                  size of each LUN (default 64)
#   lunbridge.lio.chap=user:secret[:tuser:tsecret]   CHAP (mutual with the second pair)
#   lunbridge.lio.initiator=IQN              explicit ACL for this initiator (generate_node_acls 0);
#                                            CHAP then lives on the ACL, else on the TPG (demo mode)
#   lunbridge.lio.digest=crc32c|crc32c,none|none    HeaderDigest and DataDigest
#   lunbridge.lio.headerdigest=V / lunbridge.lio.datadigest=V   each one separately (raw LIO values)
#   lunbridge.lio.param.KEY=VALUE            any tpgt_1/param/KEY (e.g. MaxRecvDataSegmentLength)
#   lunbridge.lio.attrib.KEY=VALUE           any tpgt_1/attrib/KEY (e.g. default_cmdsn_depth)
#   lunbridge.lio.erl=0|1|2                  ErrorRecoveryLevel: tpgt_1/attrib/default_erl (LIO
#                                            offers the node ACL's default_erl at login, copied from
#                                            the TPG's when the ACL is created) and param/ErrorRecoveryLevel
#   lunbridge.lio.maxconnections=N           tpgt_1/param/MaxConnections (MC/S)
. /scenarios/lib.sh

IQN=$(param lio.iqn iqn.2003-01.org.linux-iscsi.vmlab:t0)
SIZE_MB=$(param lio.size_mb 64)
CHAP=$(param lio.chap "")
INI=$(param lio.initiator "")
DIGEST=$(param lio.digest "")
HD=$(param lio.headerdigest "")
DD=$(param lio.datadigest "")
ERL=$(param lio.erl "")
MAXC=$(param lio.maxconnections "")

run_to 30 modprobe -a configfs target_core_mod iscsi_target_mod target_core_file target_core_iblock crc32c_generic crct10dif_generic
grep -q configfs /proc/mounts || run_to 10 mount -t configfs none /sys/kernel/config
T=/sys/kernel/config/target
[ -d $T ] || fail "no $T after loading target_core_mod"

w() { # w VALUE FILE: write a configfs attribute (no newline: LIO keeps it in auth values), fail loudly
  printf %s "$1" >"$2" 2>/tmp/w.err || fail "write '$1' > $2: $(cat /tmp/w.err)"
}

# backstores
mkdir -p $T/core/rd_mcp_0/rd0 || fail "mkdir rd_mcp"
w "rd_pages=$((SIZE_MB * 256))" $T/core/rd_mcp_0/rd0/control
w vmlab-rd0 $T/core/rd_mcp_0/rd0/wwn/vpd_unit_serial
w 1 $T/core/rd_mcp_0/rd0/enable
mkdir -p /tmp/lio
mkdir -p $T/core/fileio_1/fd0 || fail "mkdir fileio"
w "fd_dev_name=/tmp/lio/fd0.img,fd_dev_size=$((SIZE_MB * 1048576))" $T/core/fileio_1/fd0/control
w vmlab-fd0 $T/core/fileio_1/fd0/wwn/vpd_unit_serial
w 1 $T/core/fileio_1/fd0/enable

# target, TPG, LUNs, portal
TPG=$T/iscsi/$IQN/tpgt_1
mkdir -p $TPG || fail "mkdir $TPG"
mkdir -p $TPG/lun/lun_0 $TPG/lun/lun_1
ln -s $T/core/rd_mcp_0/rd0 $TPG/lun/lun_0/vmlab_rd0 || fail "link lun 0"
ln -s $T/core/fileio_1/fd0 $TPG/lun/lun_1/vmlab_fd0 || fail "link lun 1"
mkdir $TPG/np/0.0.0.0:3260 || fail "portal 0.0.0.0:3260"

case $DIGEST in
  "") ;;
  crc32c|CRC32C) HD=${HD:-CRC32C}; DD=${DD:-CRC32C};;
  none|None) HD=${HD:-None}; DD=${DD:-None};;
  *) v=$(echo "$DIGEST" | sed 's/crc32c/CRC32C/g; s/none/None/g'); HD=${HD:-$v}; DD=${DD:-$v};;
esac
[ -n "$HD" ] && w "$HD" $TPG/param/HeaderDigest
[ -n "$DD" ] && w "$DD" $TPG/param/DataDigest
if [ -n "$ERL" ]; then # before the ACL is made: a node ACL copies default_erl when created
  w "$ERL" $TPG/attrib/default_erl
  w "$ERL" $TPG/param/ErrorRecoveryLevel
fi
[ -n "$MAXC" ] && w "$MAXC" $TPG/param/MaxConnections
# generic param/attrib overrides: take the original spelling from /proc/cmdline (keys are case-sensitive)
for word in $(cat /proc/cmdline); do
  case $word in
    lunbridge.lio.param.*=*) k=${word%%=*}; k=${k#lunbridge.lio.param.}; w "${word#*=}" $TPG/param/$k;;
    lunbridge.lio.attrib.*=*) k=${word%%=*}; k=${k#lunbridge.lio.attrib.}; w "${word#*=}" $TPG/attrib/$k;;
  esac
done

CU=; CS=; TU=; TS=
if [ -n "$CHAP" ]; then
  IFS=: read -r CU CS TU TS <<X
$CHAP
X
  [ -n "$CU" ] && [ -n "$CS" ] || fail "lunbridge.lio.chap must be user:secret[:tuser:tsecret]"
fi

if [ -n "$INI" ]; then
  w 0 $TPG/attrib/generate_node_acls
  ACL=$TPG/acls/$INI
  mkdir -p $ACL || fail "mkdir acl $INI"
  for n in 0 1; do
    mkdir $ACL/lun_$n || fail "mkdir mapped lun $n"
    ln -s $TPG/lun/lun_$n $ACL/lun_$n/map || fail "map lun $n"
  done
  AUTH=$ACL/auth
else
  w 1 $TPG/attrib/generate_node_acls
  w 1 $TPG/attrib/cache_dynamic_acls
  w 0 $TPG/attrib/demo_mode_write_protect
  AUTH=$TPG/auth
fi
if [ -n "$CU" ]; then
  w "$CU" $AUTH/userid
  w "$CS" $AUTH/password
  if [ -n "$TU" ]; then
    w "$TU" $AUTH/userid_mutual
    w "$TS" $AUTH/password_mutual
  fi
  w 1 $TPG/attrib/authentication
else
  w 0 $TPG/attrib/authentication
fi
w 1 $TPG/enable

log "target $IQN: hd=$(cat $TPG/param/HeaderDigest) dd=$(cat $TPG/param/DataDigest) erl=$(cat $TPG/attrib/default_erl) maxconn=$(cat $TPG/param/MaxConnections) auth=$(cat $TPG/attrib/authentication) acls=$(cat $TPG/attrib/generate_node_acls) initiator=${INI:-any} chap=${CU:-none}${TU:+ mutual=$TU}"
echo "=== VMLAB LIO iqn=$IQN luns=0,1 lun_size=$((SIZE_MB * 1048576)) ==="
echo "=== VMLAB READY ==="
serve_commands
# show what happened (sessions still open when stopped)
cat $TPG/dynamic_sessions 2>/dev/null | head -n 20
exit 0
