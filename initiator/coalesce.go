package initiator

import (
	"time"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

// Receive coalescing: when many commands are outstanding and the socket
// is empty, the read loop asks the kernel to wake it only once several
// responses' worth of bytes have arrived (rawsock.ReadCoalesced,
// SO_RCVLOWAT), bounded by coalesceWait.
//
// Why: a target that answers at its own pace (tgtd's single event loop
// sends one or two responses per loop turn) otherwise wakes the initiator
// once per response, and that wake-up — poller, scheduler, a read that
// finds the socket empty — is most of the initiator's CPU per I/O. With
// 32 commands outstanding, waiting for a quarter of them adds about an
// eighth of the queue's latency on average and divides the wake-ups by up
// to eight; the target stays busy with the other three quarters, so the
// rate does not drop.
//
// The wait is a guess (responses' sizes are estimated from those just
// received), so it is adaptive: every wait that reaches its byte count
// raises the number of responses waited for by one, up to a quarter of
// the outstanding commands; a wait ended by the timer halves it and turns
// coalescing off for a number of waits that doubles with each time-out in
// a row (a slow or idle target, a mix of short and long responses).
// Below coalesceMinQueue outstanding commands it is off: latency-bound
// workloads never wait.
const (
	coalesceMinQueue = 16
	coalesceWait     = time.Millisecond
	coalesceMaxBytes = 32 << 10 // SO_RCVLOWAT well under the receive buffer
	coalesceMaxHold  = 1024
	coalesceMaxK     = 64
	coalesceProbe    = 32 // every 32nd wait is for any byte, to measure plainAvg
	coalesceSample   = 32 // completions per size estimate
)

type coalescer struct {
	k       int // responses to wait for
	hold    int // waits left with coalescing off after a time-out
	backoff int // the next hold
	rx      int // bytes received since the estimate
	done    int // completions since the estimate
	perResp int // bytes per completion, estimated (0: none yet)

	waits    int // lowat calls, for the probes
	plainAvg int // bytes a wait for any byte finds (moving average)
}

// received notes n bytes read from the socket.
func (co *coalescer) received(n int) { co.rx += n }

// completed notes a PDU that ends a command (a SCSI Response, or a
// Data-In with status).
func (co *coalescer) completed(b *pdu.BHS) {
	op := b.Opcode()
	if op != pdu.OpSCSIResponse && (op != pdu.OpDataIn || b[1]&0x01 == 0) {
		return
	}
	co.done++
	if co.done >= coalesceSample {
		co.perResp = co.rx / co.done
		co.rx, co.done = 0, 0
	}
}

// lowat is the byte count to wait for (1: no coalescing); outstanding
// counts the commands in flight on the connection (called only when it
// matters).
func (co *coalescer) lowat(outstanding func() int) int {
	if co.perResp == 0 {
		return 1
	}
	co.waits++
	if co.waits%coalesceProbe == 0 || co.plainAvg >= 2*co.perResp {
		// A probe, or plain waits already find several responses
		// (the initiator, not the target, is the slower one): no need.
		return 1
	}
	if co.hold > 0 {
		co.hold--
		return 1
	}
	n := outstanding()
	if n < coalesceMinQueue {
		return 1
	}
	k := min(max(co.k, 2), n/4)
	return min(k*co.perResp, coalesceMaxBytes)
}

// plain notes the bytes a wait for any byte found.
func (co *coalescer) plain(n int) { co.plainAvg = (3*co.plainAvg + n) / 4 }

// waited adapts k to how the last coalesced wait ended.
func (co *coalescer) waited(timedOut bool) {
	if timedOut {
		co.k /= 2
		co.backoff = min(max(2*co.backoff, 1), coalesceMaxHold)
		co.hold = co.backoff
		return
	}
	co.k = min(co.k+1, coalesceMaxK)
	co.backoff /= 2
}
