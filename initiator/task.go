package initiator

import (
	"sync"
	"sync/atomic"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

type taskKind uint8

const (
	kindSCSI taskKind = iota
	kindTMF
	kindText
	kindNop
	kindLogout
)

// r2tReq is a solicitation the read loop hands to the task's own goroutine,
// which sends the Data-Out (the read loop never blocks on writes for data).
type r2tReq struct {
	conn   *conn // the connection it came on: the data goes there
	ttt    uint32
	offset uint32
	length uint32
}

// task is one outstanding exchange identified by its ITT.
type task struct {
	itt   uint32
	kind  taskKind
	lun   uint64
	cmdSN uint32
	conn  *conn

	// SCSI data.
	req       pdu.SCSICommand // the command PDU, sent by sendSCSI
	imm       int             // immediate data bytes (with the command)
	unsol     int             // unsolicited Data-Out bytes after it
	rbuf      []byte          // Data-In lands here at BufferOffset
	wbuf      []byte          // Data-Out comes from here
	expDataSN uint32
	received  int
	r2t       chan r2tReq
	r2tSN     uint32
	// reassigned is set (under Session.taskMu) once ERL 2 connection
	// recovery moved the task to another connection (connrecovery.go).
	reassigned bool
	// ERL 1 (erl1.go; read loop only): Data-In ranges to re-request, and
	// held: the status is in resp but completion waits for them.
	// snackGen disarms a pending SNACK timer when it changes.
	gaps     []dataGap
	held     bool
	heldSN   uint32 // StatSN of the held status
	snackGen atomic.Uint32

	// Command timeout: start (UnixNano, 0 = none); timedOut is set once
	// the sweeper (or a cancellation) escalated the task.
	start     int64
	timedOut  atomic.Bool
	cancelled bool
	retries   int // command retries (retry.go), escalation only

	// TMF: function and referenced task; holding is set (under
	// Session.winMu) while a task-set function holds new commands.
	tmfFunc uint8
	tmfRef  uint32
	holding bool
	// abortResp is the response of the TMF that ended this SCSI task
	// (set before finish(ErrAborted)).
	abortResp uint8

	// Completion. Only the read loop (or its exit) calls finish. done is
	// made by the first doneCh: a command on the non-blocking path, which
	// nobody waits for, never pays for a channel.
	mu       sync.Mutex
	finished bool
	done     chan struct{}
	// async, when set, is told once the task is finished, on the
	// goroutine that finished it (the read loop, its exit, or a TMF's
	// completion).
	async *asyncCmd
	err   error
	resp  Response
	// Control responses (TMF, Text, NOP-In, Logout) and their data.
	ctl     pdu.PDU
	ctlData []byte
}

func newTask(kind taskKind) *task {
	return &task{kind: kind}
}

// finish ends the task once with err; later calls do nothing.
func (t *task) finish(err error) {
	t.mu.Lock()
	if t.finished {
		t.mu.Unlock()
		return
	}
	t.finished = true
	t.err = err
	if t.done != nil {
		close(t.done)
	}
	t.mu.Unlock()
	if t.async != nil {
		t.async.finished(t)
	}
}

// doneCh returns a channel closed once the task is finished.
func (t *task) doneCh() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.done == nil {
		t.done = make(chan struct{})
		if t.finished {
			close(t.done)
		}
	}
	return t.done
}

// Response is the outcome of a SCSI command.
type Response struct {
	// Status is the SCSI status byte (0 GOOD, 2 CHECK CONDITION, ...).
	Status uint8
	// Sense is the sense data (without iSCSI's 2-byte SenseLength), if any.
	Sense []byte
	// Residual is the residual count; Underflow: the target moved less
	// than expected, Overflow: it had more to move.
	Residual            uint32
	Underflow, Overflow bool
	// Received counts Data-In bytes placed in the read buffer.
	Received int
}

// Command is one SCSI command for Session.Do.
type Command struct {
	// LUN is the 8-byte LUN field (see scsi.EncodeLUN).
	LUN uint64
	// CDB is up to 16 bytes.
	CDB []byte
	// Read is the Data-In buffer; its length is the expected read length.
	Read []byte
	// Write is the Data-Out payload.
	Write []byte
	// Attr defaults to Simple.
	Attr pdu.TaskAttr
}

// reassignedTask reports whether t was moved by connection recovery.
func (s *Session) reassignedTask(t *task) bool {
	s.taskMu.Lock()
	defer s.taskMu.Unlock()
	return t.reassigned
}
