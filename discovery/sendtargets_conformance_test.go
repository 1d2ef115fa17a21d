package discovery

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/pdu"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

// UNH-IOL FFP 18.4: a SendTargets response that carries an operational
// key (MaxRecvDataSegmentLength=512, with F=1 and a Target Transfer Tag)
// is a protocol error: the initiator does not negotiate the key, fails
// the request and drops the session without a Logout (session recovery;
// a discovery session has nothing to recover).
func TestConformanceSendTargetsOtherParameters(t *testing.T) {
	defer faketarget.LeakCheck(t)()
	tg := faketarget.New(faketarget.Config{OnPDU: func(c *faketarget.Conn, p pdu.PDU, _ []byte) bool {
		q, ok := p.(*pdu.TextRequest)
		if !ok {
			return false
		}
		c.Send(&pdu.TextResponse{Header: pdu.Header{ITT: q.ITT, Final: true}, TTT: 0x1234},
			pdu.AppendText(nil, pdu.KV{Key: "TargetName", Value: faketarget.DefaultTargetName},
				pdu.KV{Key: "TargetAddress", Value: "127.0.0.1:3260,1"},
				pdu.KV{Key: "MaxRecvDataSegmentLength", Value: "512"}))
		return true
	}})
	defer tg.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	_, err := SendTargets(ctx, initiator.Config{InitiatorName: "iqn.2026-11.org.lunbridge:conformance", Portal: "fake:3260",
		Dial: tg.Dial, NopInterval: -1, NoRecovery: true}, "All")
	if !errors.Is(err, initiator.ErrProtocol) {
		t.Fatalf("SendTargets with an operational key: %v, want a protocol error", err)
	}
	c := tg.Conns()[0]
	select {
	case <-c.Done():
	case <-ctx.Done():
		t.Fatal("connection not dropped")
	}
	var texts, logouts int
	for _, r := range c.Received() {
		switch r.Opcode() {
		case pdu.OpTextReq:
			texts++
		case pdu.OpLogoutReq:
			logouts++
		}
	}
	if texts != 1 || logouts != 0 {
		t.Fatalf("%d Text Requests (the key must not be negotiated), %d Logouts (want none)", texts, logouts)
	}
	if v := tg.Violations(); len(v) > 0 {
		t.Fatalf("violations: %v", v)
	}
}
