// Package nbdbridge serves a blockdev.Device over the NBD protocol and binds
// it to a kernel /dev/nbdX.
//
// It owns: the fixed-newstyle handshake (options, info, meta contexts), the
// transmission phase (simple and structured replies, base:allocation block
// status), per-connection flow control, the server's counters, and the
// kernel attach paths (generic netlink family "nbd", ioctl fallback).
// It imports blockdev, logrus and the netlink/x/sys plumbing only; it must not
// import the initiator, multipath or the CLI.
//
// Reference: the NBD protocol, NetworkBlockDevice/nbd doc/proto.md. All
// integers on the wire are big-endian.
//
// Handshake (server greeting, then client flags, then options):
//
//	S: "NBDMAGIC" u64 | "IHAVEOPT" u64 | handshake flags u16
//	C: client flags u32
//	C: "IHAVEOPT" u64 | option u32 | length u32 | data[length]
//	S: 0x3e889045565a9 u64 | option u32 | reply type u32 | length u32 | data
//
// Transmission:
//
//	request (28 bytes):
//	 0      4      6      8              16             24     28
//	+------+------+------+--------------+--------------+------+--------------+
//	|magic |flags |type  |cookie        |offset        |length| data (WRITE) |
//	+------+------+------+--------------+--------------+------+--------------+
//	simple reply (16 bytes): magic 0x67446698 | error u32 | cookie u64 | data (READ)
//	structured chunk (20 bytes): magic 0x668e33ef | flags u16 | type u16 |
//	                             cookie u64 | length u32 | payload[length]
//
// A request's life, one file per stage, read top to bottom: server.go and
// handshake.go accept a client and negotiate; conn.go runs a connection
// (transmit: the read loop, then draining); request.go reads and validates
// each request; dispatch.go reads its payload and runs it on the device;
// reply.go encodes its reply and queues it for the connection's writer.
//
// Concurrency: one read loop per connection parses requests and hands each to
// a goroutine, bounded by a request count and an in-flight byte budget taken
// before any payload buffer is allocated. Replies are written under the
// connection's write mutex (the only lock a worker takes besides the budget;
// lock order: budget, then write mutex — never the reverse).
package nbdbridge
