#!/usr/bin/env bash
# Runs every native Go fuzz target briefly: by default 20000 executions each
# (a count, not a time: Go's coordinator sometimes reports a spurious
# "context deadline exceeded" when a time budget ends under load; such a
# run, without a crasher, is retried once).
# Longer runs: scripts/fuzz.sh 10m, or one target:
#   go test -run '^$' -fuzz '^FuzzReader$' -fuzztime 1h ./initiator/pdu
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-20000x}
log=$(mktemp /tmp/lunbridge-fuzz.XXXXXX)
trap 'rm -f "$log"' EXIT
n=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
  for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/' | sort -u); do
    ok=0
    for attempt in 1 2; do
      if go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "$dir" >"$log" 2>&1; then
        ok=1; break
      fi
      # A real crasher names its input under testdata/fuzz; retry only the
      # coordinator's own timeout.
      if grep -q 'Failing input\|testdata/fuzz' "$log" || ! grep -q 'context deadline exceeded' "$log"; then
        break
      fi
    done
    if [ $ok = 0 ]; then
      echo "FAIL fuzz $dir $f"; tail -30 "$log"; exit 1
    fi
    n=$((n+1))
  done
done
echo "fuzz: $n targets ran $t each without a crash"
