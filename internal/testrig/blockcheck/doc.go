// Package blockcheck is a history checker for block devices: the proof that
// no acknowledged write is lost, duplicated or reordered (issue 19).
//
// It owns three things:
//
//   - the block format: every 4 KiB block a workload writes names the write
//     that made it, so a read tells which write it sees (Encode, Decode);
//   - the history: every operation a client issued, with its invoke and
//     completion time on one monotonic clock, its kind, range and result
//     (History, Op);
//   - the model (Check): a per-block register where acknowledged writes
//     are definite and failed or unknown writes are "maybe" writes, with
//     kill -9 crashes that may drop acknowledged writes no FLUSH or FUA made
//     durable.
//
// The workload (Run) drives any Target — a blockdev.Device, an NBD export
// spoken from Go (NBDClient), a file on a FUSE mount — from several clients
// at once while a fault injector runs, and records the history. The fault
// scenarios against real tgtd/istgt and the fake target live in the tests
// (blockcheck_test.go); BLOCKCHECK_SOAK_TIME turns them into a soak run.
//
// Block layout (big-endian), 4096 bytes:
//
//	 0       8      12      16              24              32      36
//	+-------+------+-------+---------------+---------------+-------+----...
//	| magic |client|  seq  |     op id     |      LBA      | crc32c| fill
//	+-------+------+-------+---------------+---------------+-------+----...
//
// The CRC32-C covers the whole block with its own field zeroed; the fill is
// a pattern derived from op id and LBA, so a block whose sectors come from
// two writes (torn) fails the checksum.
//
// It imports blockdev and the standard library only (the tests import the
// initiator, multipath and the target harnesses).
package blockcheck
