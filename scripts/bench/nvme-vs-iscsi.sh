#!/bin/sh
# nvme-vs-iscsi.sh: bench one RAM-backed disk in the VM lab exported by LIO over iSCSI and by
# the kernel nvmet over NVMe/TCP, with the same `lunbridge bench` workloads alternated between
# the two, and print the NVMe/TCP : iSCSI ratios (TCG makes the absolute figures meaningless).
#   LUNBRIDGE_BENCH_TIME=8     seconds per run
#   LUNBRIDGE_BENCH_ROUNDS=2   alternations
# Needs the VM lab (scripts/vmlab/build.sh, qemu-system-x86_64).
set -eu
cd "$(dirname "$0")/../.."
LUNBRIDGE_VMLAB=1 LUNBRIDGE_VMLAB_BENCH=1 CGO_ENABLED=0 \
  go test -count=1 -timeout 30m -run '^TestProtocolBench$' -v ./internal/testrig/vmlab/ |
  sed -n '/LIO iSCSI vs nvmet/,/^---/p'
