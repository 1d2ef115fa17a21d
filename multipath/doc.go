// Package multipath combines several paths to one logical unit — one iSCSI
// session per target portal, each with its own ISID — into one
// blockdev.Device, the way dm-multipath + multipathd do on Linux, but in
// the same process as the initiator.
//
// It owns: path grouping by identity (VPD 0x83 WWID, VPD 0x80 serial,
// capacity, block size), path selectors (failover, round-robin,
// queue-length, service-time), ALUA priorities (REPORT TARGET PORT GROUPS),
// error classification, failover without ghost writes, the path checker,
// reinstatement and failback, the no-path queue, and the status snapshot
// (also served as JSON on a Unix control socket). It imports blockdev,
// initiator (+ initiator/scsi, initiator/pdu), nvmetcp (+ nvmetcp/pdu) and
// logrus; nothing above it.
//
// NVMe/TCP paths (OpenNVMe) use the same seam: one association per
// portal, the namespace's ANA group state standing in for the ALUA state
// (optimized = active/optimized, non-optimized = active/non-optimized,
// inaccessible = unavailable, persistent loss = offline, change =
// transitioning), ANA path statuses handled like ALUA NOT READY sense,
// and failed writes fenced by the keep-alive timeout (see OpenNVMe).
// The mirror (RAID-1) lives in multipath/mirror.
//
// # Sessions
//
// Every path's session runs with initiator.Config.NoRecovery: the first
// connection failure ends the session, and this package — not the
// initiator — decides what happens next (re-issue elsewhere, reinstate the
// path later). Keepalive defaults are short (NOP-Out after 2 s idle, 2 s to
// answer) so a black-holed path is declared dead within about 4 s.
//
// # Error classification
//
// Like dm-multipath: a transport error (*initiator.ConnError, a closed or
// failed session, blockdev.ErrUnavailable, the per-path I/O timeout) fails
// the path and the I/O is re-issued on another path. SCSI errors — medium
// errors, ILLEGAL REQUEST, DATA PROTECT, RESERVATION CONFLICT, no space,
// anything wrapping *scsi.SenseError or blockdev's ErrReadOnly,
// ErrOutOfRange, ErrMedium, ErrNoSpace, ErrNotSupported, ErrInvalid — go to
// the caller unchanged: another path would answer the same. NOT READY with
// an ALUA state (04/0A transitioning, 04/0B standby, 04/0C unavailable)
// re-reads the path's access state and retries elsewhere; a task ended by
// a LOGICAL UNIT RESET we sent ourselves (initiator.ErrAborted) is retried,
// and so are TASK ABORTED, BUSY and TASK SET FULL (a LUN reset or PREEMPT
// AND ABORT from another nexus; bounded, then blockdev.ErrBusy).
//
// # No ghost writes
//
// A write (also WRITE SAME and UNMAP) that failed on path A with a
// transport error may still sit in the target's queue, or in the network
// on its way to the target. Re-issuing it on path B at once could let the
// old copy land after the new one — or after a later write to the same
// blocks — and silently undo it. So A's session is first closed
// abortively (initiator.Session.Abort: no Logout, SO_LINGER 0, so the
// kernel drops what it still had queued for A and sends RST), and a failed
// write is held until A's I_T nexus is provably dead, by the first of:
//
//  1. session reinstatement: a login with A's ISID and TSIH 0 succeeds
//     into the same target and target portal group as A's session,
//     through A's own portal or through the portal of a live path in
//     that group (RFC 7143, Section 6.3.5: the target terminates the old
//     session's tasks and closes its connections before it answers; PDUs
//     still in the network then meet a closed socket). A login redirected
//     or moved into another portal group makes a new session and proves
//     nothing; fencing logins do not follow redirects;
//  2. after FenceTimeout (5 s) without that: a LOGICAL UNIT RESET sent
//     through a live path completes (it ends every task of the LU, from
//     every nexus). With the abortive close, what it cannot cover is only
//     packets already in the network, which drain in milliseconds;
//     reinstatement is still tried first and keeps going.
//
// Reads, FLUSH and GET LBA STATUS are re-issued at once. Tasks of other
// paths ended by that reset come back as initiator.ErrAborted and are
// re-issued too (the completed reset proves they are dead).
//
// # Checker, failback, no path
//
// Every CheckInterval each path with a session gets TEST UNIT READY and a
// NOP-Out ping (standby paths too), and ALUA states are refreshed. Failed
// paths are re-logged in with their own ISID (which reinstates the old
// session) and their identity re-checked: a different LUN behind the path
// keeps it failed with an error naming both identities. A path that failed
// MaxPathErrors I/Os in a row must also pass a READ before it is used again
// ("TUR fine but I/O fails"). Failback: immediate, manual, followover (back
// to the preferred path only when it comes up after the failover), or after
// N seconds of health. With no usable path, I/O waits at most NoPathTimeout
// and then fails with blockdev.ErrUnavailable naming each path's last error.
package multipath
