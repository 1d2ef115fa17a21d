#!/bin/bash
# MC/S connection-reset check against istgt (issue 19 item 16b), by hand:
# `lunbridge --connections 4 serve` on an istgt LUN, fio writing with crc32c
# verify over NBD, and one established iSCSI connection destroyed with
# `ss -K` every ~4 s, only while all 4 are up. Prints fio's verdict and the
# recoveries. Needs root (ss -K), fio with the nbd engine, istgt.
#   KILLS=8 RUNTIME=60 bash scripts/mcs-reset-repro.sh
set -u
cd "$(dirname "$0")/.."
W=$(mktemp -d /tmp/lunbridge-mcs.XXXXXX)
go build -o "$W/lunbridge" ./cmd/lunbridge && go build -o "$W/lbtarget" ./internal/testrig/targets/cmd/lbtarget || exit 1
URL=$("$W/lbtarget" start --state-dir "$W/state" --kind istgt --size 256M) || exit 1
PORT=$(echo "$URL" | sed -E 's#iscsi://[^:]+:([0-9]+)/.*#\1#')
SOCK=$W/s.sock
"$W/lunbridge" --log-level info --connections 4 serve --listen "unix:$SOCK" --persistent --shared 8 "$URL" >"$W/serve.out" 2>"$W/serve.err" &
SP=$!
sleep 2
( for i in $(seq 1 "${KILLS:-8}"); do
    for w in $(seq 1 100); do n=$(ss -tnH state established dst 127.0.0.1 dport = ":$PORT" | wc -l); [ "$n" -ge 4 ] && break; sleep 0.2; done
    sleep 4
    s=$(ss -tnH state established dst 127.0.0.1 dport = ":$PORT" | awk '{print $3}' | shuf -n1 | sed 's/.*://')
    [ -n "$s" ] && ss -K -tn dst 127.0.0.1 dport = ":$PORT" sport = ":$s" >/dev/null 2>&1 && echo "reset sport $s (connections up: $n)"
  done ) >"$W/kills.log" &
KP=$!
fio --name=v --ioengine=nbd --uri="nbd+unix:///?socket=$SOCK" --rw=randwrite --bs=4k --iodepth=16 --size=64M \
  --verify=crc32c --verify_backlog=64 --time_based --runtime="${RUNTIME:-60}" --output="$W/fio.out" >/dev/null 2>&1
echo "fio exit $?"
kill $KP 2>/dev/null; wait $KP 2>/dev/null
kill $SP; wait $SP
"$W/lbtarget" stop --state-dir "$W/state" >/dev/null
cat "$W/kills.log"
grep -E 'err=' "$W/fio.out"
echo "recoveries: $(grep -c 'recovering the session' "$W/serve.err"); logins not answered: $(grep -c 'no answer to the login' "$W/serve.err")"
echo "logs in $W"
