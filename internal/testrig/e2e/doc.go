// Package e2e holds lunbridge's end-to-end acceptance tests: the real
// lunbridge binary (built once in TestMain) against real iSCSI targets
// (tgtd and istgt through internal/testrig/targets) and real peers (qemu-img,
// qemu-io, nbdinfo, nbdcopy, nbdfuse, fio, mkfs.ext4, losetup, e2fsck).
//
// The tests need root, the target daemons and the peer tools; a missing
// one fails the test under CI=true and skips it elsewhere (internal/testrig/testenv).
// Run with: go test ./internal/testrig/e2e/
package e2e
