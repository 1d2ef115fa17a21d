// Package blockcopy moves whole images between block devices, files and
// streams: pull (Device → file or stream), push (file or stream → Device),
// Device → Device copies, and verify (Device ⇔ file compare).
//
// It owns the copy engine: many reads in flight over a fixed pool of buffers
// (memory does not grow with the device size), sparse awareness (extents of
// the source are skipped, all-zero chunks are detected, files get holes,
// devices get WriteZeroes), an in-order SHA-256 of the whole image computed
// through the bounded reorder window, progress reports at a bounded rate,
// a token-bucket rate limit, and resumable pulls to files through a small
// sidecar state file (FILE.lunbridge-resume).
//
// Engine shape:
//
//	planner ──tasks in order──▶ N workers ──results out of order──▶ committer
//	(extents, buffers,            (read source,                   (reorders by seq:
//	 window slots)                 zero check, WriteAt)            stream output, hash,
//	                                                               watermark, progress,
//	                                                               checkpoint)
//
// The planner takes a buffer from the fixed pool and a window slot for each
// task before handing it out, in order, so the oldest unfinished task always
// owns a buffer and the committer can always advance: no deadlock, and at most
// Workers*2 chunks are held at once.
//
// blockcopy imports only blockdev and the standard library. It never logs.
package blockcopy
