// Package fusefs exposes one blockdev.Device as one regular file (by default
// "disk.img") in a FUSE file system, so that ordinary tools — dd, fio,
// losetup, qemu-img, mkfs — can use a remote LUN as a local image file.
//
// It owns: the go-fuse node tree (a root directory holding the one file),
// the mapping of byte-granular file I/O onto block-granular device I/O,
// fallocate/lseek/fsync semantics, the errno mapping of blockdev errors, and
// mounting, unmounting and clearing stale mounts. It imports blockdev,
// go-fuse and logrus only; it must not import the initiator, multipath or
// any other lunbridge package above blockdev.
//
// # File semantics
//
// The file has the device's size, which never changes; its mode is 0600
// (Options.Mode, Options.GID to share it), without the write bits when the
// device or the mount is read-only. Reads and writes may use any offset and
// length:
//
//   - aligned parts go straight to the device, into and out of the FUSE
//     request buffers;
//   - an unaligned head or tail is a read-modify-write of the edge block.
//     Every write holds a range lock over its block-rounded range for its
//     whole duration, so two writers touching the same block (even at
//     disjoint bytes) never lose each other's update, while writers of
//     disjoint blocks run in parallel. Reads take no lock.
//   - the file behaves like a block device node at its end: a read at or
//     past the end returns 0 bytes (EOF), a read straddling it is short; a
//     write straddling the end is short (the bytes that fit), a write at or
//     past the end fails with ENOSPC — which is what dd and the kernel's
//     block devices report ("No space left on device").
//
// Fsync and Flush (close) call the device's Flush. Setattr refuses to change
// the size (EPERM; so open(O_TRUNC) fails — use dd conv=notrunc) and keeps
// mode, owner and time changes in memory only.
//
// Fallocate: plain allocation inside the file is a successful no-op; mode 0
// beyond the end is EFBIG (the size is fixed), KEEP_SIZE beyond the end is a
// no-op. PUNCH_HOLE|KEEP_SIZE zeroes the edges by read-modify-write and
// deallocates the aligned middle: with Trim when the device promises that
// trimmed blocks read back as zeroes (a ReadZeroesAfterTrim() bool method),
// else with WriteZeroes(mayTrim=true), else by writing zero buffers.
// ZERO_RANGE uses WriteZeroes(mayTrim=false) or zero buffers; across the
// end it is EFBIG unless KEEP_SIZE (then clipped). PUNCH_HOLE without
// KEEP_SIZE and the other modes (COLLAPSE, INSERT, UNSHARE) are EOPNOTSUPP.
// When Trim or WriteZeroes answer blockdev.ErrNotSupported the next way down
// the list is used.
//
// Lseek SEEK_DATA/SEEK_HOLE come from the device's Extenter (a range
// flagged ExtentHole is a hole); without one the whole file is data.
//
// Errors map to errno at this edge, like go-fuse's fs.ToErrno: see [ToErrno].
// Every operation passes the FUSE request's context to the device, so an
// interrupted request (a killed process) cancels the device call (EINTR).
//
// # Direct I/O versus page cache
//
// By default the file is opened with FOPEN_DIRECT_IO and
// FOPEN_PARALLEL_DIRECT_WRITES and the mount uses 1 MiB requests: the kernel
// forwards each read and write as is (up to 1 MiB, many in parallel, without
// the per-inode write lock), nothing is cached twice (the page cache of a
// file system on top of a loop device already caches), and every read sees
// the device — which matters when the LUN is shared or changed behind our
// back. The costs: small buffered reads by applications that do not do
// their own caching each become a round trip to the device, and shared
// writable mmap of the file is refused (ENODEV).
//
// With Options.Cache the kernel page cache is used (FOPEN_KEEP_CACHE, long
// attribute and entry timeouts, 128 KiB readahead): repeated reads are
// served from memory and mmap works fully, but reads are split into
// readahead-sized requests, data is held in memory twice when a loop device
// sits on top, and changes made to the LUN by others are not seen until
// the cache is dropped. Writes are write-through in both modes (no writeback
// cache), so an acknowledged write has reached the device (its own volatile
// cache; fsync flushes that). A write through a file opened O_SYNC or
// O_DSYNC, or issued with pwritev2 RWF_DSYNC or RWF_SYNC, goes to the
// device with FUA before it is acknowledged: under direct I/O the kernel
// sends no FSYNC after it, and leaves durability to the daemon.
//
// The serving process itself must not mmap the file: a page fault on it
// blocks a thread the Go runtime cannot preempt, and the next
// stop-the-world then stops the goroutines that would answer the fault.
// Plain read/write system calls from the serving process are fine.
package fusefs
