// Package initiator is lunbridge's iSCSI session engine (RFC 7143): login
// with security and operational negotiation (AuthMethod None and CHAP, one
// way and mutual), the full feature phase with many tagged commands in
// flight under the CmdSN window, Data-In placed directly into the caller's
// buffer, R2T/Data-Out, immediate and unsolicited data, task management,
// text requests (SendTargets) and logout.
//
// It owns Session and the per-connection read loop. It imports the pure
// codecs initiator/pdu and initiator/scsi, blockdev (the LUN handle
// implements blockdev.Device) and logrus; it must not import anything above
// it (discovery, multipath, the bridges, cmd).
//
// Concurrency: one read loop goroutine per connection dispatches incoming
// PDUs by Initiator Task Tag. Callers write their own command PDUs under the
// connection's write mutex. Lock order: conn.wmu, then Session.winMu; the
// task table lock (Session.taskMu) is never held while taking another lock.
// Only the read loop completes a task (or the loop's exit, which fails every
// outstanding task with the connection's error), so a caller's buffer is
// never written after the caller's Do returns.
package initiator
