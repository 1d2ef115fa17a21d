package faketarget

import (
	"fmt"
	"strings"

	"github.com/lunbridge/lunbridge/initiator/pdu"
)

func serialGT(a, b uint32) bool { return int32(a-b) > 0 }

// dispatch handles one full feature phase PDU; it returns false when the
// connection must end (after a Logout).
func (c *Conn) dispatch(p pdu.PDU, data []byte, raw pdu.BHS) bool {
	cfg := &c.t.cfg
	if q, ok := p.(*pdu.SCSICommand); ok && c.sess != nil && cfg.LoseCommand != nil && cfg.LoseCommand(c, q) {
		c.Close()
		return true
	}
	if !c.checkCmdSN(p) {
		return true // a duplicate: discarded
	}
	if q, ok := p.(*pdu.SCSICommand); ok {
		c.mu.Lock()
		c.lunOf[q.ITT] = q.LUN
		c.mu.Unlock()
		c.checkCommand(q, data)
		if c.sess != nil {
			c.sess.command(c, q)
			if cut := cfg.CutCommand; cut != nil && cut(c, q) {
				c.sess.keepPending(q.ITT, data)
				c.Close()
				return false
			}
		}
	}
	if cfg.OnPDU != nil && cfg.OnPDU(c, p, data) {
		return true
	}
	switch q := p.(type) {
	case *pdu.SCSICommand:
		if cfg.OnCommand != nil && cfg.OnCommand(c, q, data) {
			return true
		}
		c.command(q, data)
	case *pdu.DataOut:
		if cfg.OnDataOut != nil && cfg.OnDataOut(c, q, data) {
			return true
		}
		c.dataOut(q, data)
	case *pdu.NopOut:
		c.nopOut(q, data)
	case *pdu.TaskMgmtRequest:
		c.taskMgmt(q)
	case *pdu.TextRequest:
		c.text(q, data)
	case *pdu.LogoutRequest:
		if !q.Final {
			c.t.violate("Logout Request without the F bit")
		}
		if q.DataLen != 0 {
			c.t.violate("Logout Request with a data segment")
		}
		if c.sess != nil && q.Reason != pdu.LogoutCloseSession && q.CID != c.cid {
			// Close another connection of the session (Section 11.14).
			resp := &pdu.LogoutResponse{Header: pdu.Header{ITT: q.ITT}}
			switch {
			case q.Reason == 2 && c.Params().ErrorRecoveryLevel < 2:
				resp.Response = 2 // connection recovery not supported
			case !c.sess.closeCID(q.CID):
				resp.Response = 1 // CID not found
			case q.Reason == 2:
				resp.Time2Wait, resp.Time2Retain = uint16(cfg.Time2Wait), uint16(cfg.retain())
			}
			c.Send(resp, nil)
			return true
		}
		c.Send(&pdu.LogoutResponse{Header: pdu.Header{ITT: q.ITT}}, nil)
		return false
	case *pdu.SNACKRequest:
		if c.Params().ErrorRecoveryLevel == 0 {
			// SNACK is not supported at ErrorRecoveryLevel 0.
			c.t.violate("SNACK at ErrorRecoveryLevel 0")
			c.SendReject(pdu.RejectProtocolError, raw)
			break
		}
		c.snack(q, raw)
	}
	return true
}

// checkCmdSN checks the CmdSN of a request against the window the target
// advertised (RFC 7143, Section 4.2.2.1). It returns false for a
// duplicate, which the target discards.
func (c *Conn) checkCmdSN(p pdu.PDU) bool {
	var sn uint32
	switch q := p.(type) {
	case *pdu.SCSICommand:
		sn = q.CmdSN
	case *pdu.TaskMgmtRequest:
		sn = q.CmdSN
	case *pdu.TextRequest:
		sn = q.CmdSN
	case *pdu.LogoutRequest:
		sn = q.CmdSN
	case *pdu.NopOut:
		sn = q.CmdSN
	default:
		return true
	}
	h := p.Hdr()
	if c.sess != nil {
		c.sess.checkCmdSN(c.t, h, sn)
		return true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	gap := len(c.gaps) > 0
	if h.Immediate {
		// "An immediate command carries the current CmdSN" — which is
		// past ExpCmdSN while a dropped command leaves a gap.
		if sn != c.expCmdSN && !(gap && serialGT(sn, c.expCmdSN)) {
			c.t.violate("immediate %v itt %#x carries CmdSN %d, the current CmdSN is %d", h.Opcode, h.ITT, sn, c.expCmdSN)
		}
		return true
	}
	if serialGT(sn, c.advMax) {
		c.t.violate("%v itt %#x sent with CmdSN %d beyond the advertised MaxCmdSN %d", h.Opcode, h.ITT, sn, c.advMax)
	}
	if c.gaps != nil && (serialGT(c.expCmdSN, sn) || c.ahead[sn]) {
		// "The target MUST silently ignore ... non-immediate
		// duplicates" (Section 4.2.2.1).
		c.t.violate("%v itt %#x with CmdSN %d, which the target already received (ExpCmdSN %d): discarded as a duplicate", h.Opcode, h.ITT, sn, c.expCmdSN)
		return false
	}
	delete(c.gaps, sn)
	switch {
	case gap && serialGT(sn, c.expCmdSN):
		c.ahead[sn] = true // waits behind the gap
	case sn != c.expCmdSN:
		c.t.violate("%v itt %#x has CmdSN %d, expected %d", h.Opcode, h.ITT, sn, c.expCmdSN)
		c.expCmdSN = sn + 1
	default:
		c.expCmdSN = sn + 1
		for c.ahead[c.expCmdSN] {
			delete(c.ahead, c.expCmdSN)
			c.expCmdSN++
		}
	}
	return true
}

// checkCommand checks the SCSI Command rules of RFC 7143, Sections 11.3 and
// 4.2.5.2, that do not depend on what follows.
func (c *Conn) checkCommand(q *pdu.SCSICommand, data []byte) {
	p := c.Params()
	v := func(format string, args ...any) {
		c.t.violate("SCSI Command itt %#x: "+format, append([]any{q.ITT}, args...)...)
	}
	if !q.Write && !q.Final {
		v("W and F both 0")
	}
	if q.EDTL > 0 && !q.Read && !q.Write {
		v("Expected Data Transfer Length %d with neither R nor W", q.EDTL)
	}
	if len(data) > 0 {
		switch {
		case !q.Write:
			v("immediate data without the W bit")
		case !p.ImmediateData:
			v("%d bytes of immediate data with ImmediateData=No", len(data))
		case len(data) > p.FirstBurstLength:
			v("%d bytes of immediate data exceed FirstBurstLength %d", len(data), p.FirstBurstLength)
		case len(data) > int(q.EDTL):
			v("%d bytes of immediate data exceed the Expected Data Transfer Length %d", len(data), q.EDTL)
		}
	}
	if q.Write && len(data) == int(q.EDTL) && !q.Final {
		v("all data sent as immediate data but F=0")
	}
	if q.Write && !q.Final && p.InitialR2T {
		v("F=0 (unsolicited Data-Out follows) with InitialR2T=Yes")
	}
	if q.ITT == pdu.ReservedTag {
		v("reserved Initiator Task Tag")
	}
}

func (c *Conn) nopOut(q *pdu.NopOut, data []byte) {
	if q.ITT == pdu.ReservedTag {
		// An answer to our ping, or an ExpStatSN confirmation: it must be
		// immediate (Section 11.18).
		if !q.Immediate {
			c.t.violate("NOP-Out with ITT 0xffffffff without the I bit")
		}
		if q.DataLen != 0 && q.TTT == pdu.ReservedTag {
			c.t.violate("NOP-Out with ITT and TTT 0xffffffff carries data")
		}
		return
	}
	if q.TTT != pdu.ReservedTag {
		c.t.violate("NOP-Out ping itt %#x with TTT %#x (must be 0xffffffff)", q.ITT, q.TTT)
	}
	c.Send(&pdu.NopIn{Header: pdu.Header{ITT: q.ITT, LUN: q.LUN}, TTT: pdu.ReservedTag}, data)
}

func (c *Conn) taskMgmt(q *pdu.TaskMgmtRequest) {
	if q.Function != pdu.TMFAbortTask && q.Function != pdu.TMFTaskReassign && q.RTT != pdu.ReservedTag {
		c.t.violate("TMF function %d with Referenced Task Tag %#x (must be 0xffffffff)", q.Function, q.RTT)
	}
	if q.Function == pdu.TMFTaskReassign {
		resp, resume := c.reassign(q)
		if w := c.t.cfg.ReassignWire; w != nil {
			resp = w(resp)
		}
		c.Send(&pdu.TaskMgmtResponse{Header: pdu.Header{ITT: q.ITT}, Response: resp}, nil)
		if resume != nil {
			resume()
		}
		return
	}
	var resp uint8 = pdu.TMFRespComplete
	c.mu.Lock()
	switch q.Function {
	case pdu.TMFAbortTask:
		delete(c.writes, q.RTT)
	case pdu.TMFAbortTaskSet, pdu.TMFClearTaskSet, pdu.TMFLogicalUnitReset:
		for itt, w := range c.writes {
			if w.cmd.LUN == q.LUN {
				delete(c.writes, itt)
			}
		}
	case pdu.TMFTargetWarmReset, pdu.TMFTargetColdReset:
		clear(c.writes)
	case pdu.TMFTaskReassign:
		resp = pdu.TMFRespNoReassign
	default:
		resp = pdu.TMFRespNotSupported
	}
	c.mu.Unlock()
	c.Send(&pdu.TaskMgmtResponse{Header: pdu.Header{ITT: q.ITT}, Response: resp}, nil)
}

// text answers a Text Request: SendTargets lists this target; other keys
// are NotUnderstood. A response longer than the initiator's
// MaxRecvDataSegmentLength is split with the C bit and a Target Transfer
// Tag (Section 11.11).
func (c *Conn) text(q *pdu.TextRequest, data []byte) {
	if q.Continue || !q.Final {
		c.t.violate("Text Request itt %#x with C=1 or F=0 (not supported by the fake target)", q.ITT)
	}
	c.mu.Lock()
	pending, cont := c.textPending[q.TTT]
	if cont {
		delete(c.textPending, q.TTT)
	}
	c.mu.Unlock()
	if q.TTT != pdu.ReservedTag && !cont {
		c.t.violate("Text Request itt %#x with unknown TTT %#x", q.ITT, q.TTT)
	}
	var out []byte
	if cont {
		out = pending
	} else {
		kvs, err := pdu.ParseText(data)
		if err != nil {
			c.t.violate("Text Request itt %#x: %v", q.ITT, err)
		}
		var ans []pdu.KV
		for _, kv := range kvs {
			switch kv.Key {
			case "SendTargets":
				if kv.Value == "All" || kv.Value == "" || kv.Value == c.t.cfg.TargetName {
					ans = append(ans, pdu.KV{Key: "TargetName", Value: c.t.cfg.TargetName})
					for _, a := range c.t.portals() {
						ans = append(ans, pdu.KV{Key: "TargetAddress", Value: a})
					}
				}
			default:
				ans = append(ans, pdu.KV{Key: kv.Key, Value: "NotUnderstood"})
			}
		}
		out = pdu.AppendText(nil, ans...)
	}
	resp := &pdu.TextResponse{Header: pdu.Header{ITT: q.ITT, LUN: q.LUN, Final: true}, TTT: pdu.ReservedTag}
	if lim := c.Params().InitiatorMaxRecvDSL; len(out) > lim {
		ttt := c.NewTTT()
		c.mu.Lock()
		if c.textPending == nil {
			c.textPending = map[uint32][]byte{}
		}
		c.textPending[ttt] = out[lim:]
		c.mu.Unlock()
		out = out[:lim]
		resp.Final, resp.Continue, resp.TTT = false, true, ttt
	}
	c.Send(resp, out)
}

// portals returns the TargetAddress values SendTargets reports.
func (t *Target) portals() []string {
	if len(t.cfg.Portals) > 0 {
		return t.cfg.Portals
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.ln != nil {
		return []string{t.ln.Addr().String() + ",1"}
	}
	return []string{"127.0.0.1:3260,1"}
}

// keyList formats keys for messages.
func keyList(kvs []pdu.KV) string {
	var s []string
	for _, kv := range kvs {
		s = append(s, fmt.Sprintf("%s=%s", kv.Key, kv.Value))
	}
	return strings.Join(s, " ")
}
