# Helpers shared by the scenarios (sourced). See ../init for the parameter conventions.
log() { echo "vmlab[$LB_SCENARIO]: $*"; }
# fail REASON: record the reason (printed in the FAIL marker by /init) and end the scenario.
fail() { echo "$*" >>/tmp/fail-reason; log "FAIL: $*"; exit 1; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }
# run_to SECS CMD...: run CMD with a timeout; fail on non-zero exit.
run_to() { local s=$1; shift; timeout "$s" "$@" || fail "$* (rc $?)"; }
# param NAME DEFAULT: value of lunbridge.NAME (NAME with dots), or DEFAULT
param() { eval "echo \"\${LB_$(echo "$1" | tr 'a-z.-' 'A-Z__'):-$2}\""; }

# serve_commands: the host->guest command channel on the serial console (the host writes to
# qemu's stdin). Lines:
#   stop                 return (the scenario ends, PASS unless it decides otherwise)
#   run ID SHELL-COMMAND run it; output framed by
#                        === VMLAB CMD ID BEGIN === ... === VMLAB CMD ID END rc=N ===
# Anything else is ignored. EOF on the console also returns.
serve_commands() {
  stty -echo 2>/dev/null
  while IFS= read -r line; do
    line=$(echo "$line" | tr -d '\r')
    case $line in
      stop) log "stop requested"; return 0;;
      "run "*)
        rest=${line#run }; id=${rest%% *}; cmd=${rest#* }
        echo "=== VMLAB CMD $id BEGIN ==="
        sh -c "$cmd" </dev/null 2>&1; rc=$?
        echo "=== VMLAB CMD $id END rc=$rc ===";;
    esac
  done
  log "console EOF"
}
