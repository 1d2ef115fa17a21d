#!/usr/bin/env bash
# Runs every native Go fuzz target for a short time (default 3s each).
# Longer runs: FUZZTIME=10m scripts/fuzz.sh, or one target:
#   go test -run '^$' -fuzz '^FuzzReader$' -fuzztime 1h ./initiator/pdu
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-3s}
n=0
for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do
  for f in $(grep -h '^func Fuzz' "$dir"/*_test.go | sed 's/^func \(Fuzz[A-Za-z0-9_]*\).*/\1/' | sort -u); do
    go test -run '^$' -fuzz "^${f}\$" -fuzztime "$t" "$dir" >/tmp/lunbridge-fuzz.log 2>&1 || {
      echo "FAIL fuzz $dir $f"; tail -30 /tmp/lunbridge-fuzz.log; exit 1; }
    n=$((n+1))
  done
done
echo "fuzz: $n targets ran $t each without a crash"
