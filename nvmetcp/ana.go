package nvmetcp

import (
	"context"
	"errors"
	"fmt"

	"github.com/lunbridge/lunbridge/nvmetcp/pdu"
)

// ANALog reads the ANA log page (Get Log Page 0Ch, NVMe Base 2.0,
// Section 5.16.1.13) of a controller that reports ANA, growing the read
// until the whole page fits (at most 1 MiB).
func (c *Controller) ANALog(ctx context.Context) (pdu.ANALog, error) {
	if c.Info().CMIC&pdu.CMICANA == 0 {
		return pdu.ANALog{}, ErrNoANA
	}
	n := 4096
	for {
		buf := make([]byte, n)
		if err := c.GetLogPage(ctx, pdu.LogANA, 0, buf); err != nil {
			return pdu.ANALog{}, err
		}
		l, err := pdu.ParseANALog(buf)
		var short *pdu.ShortANALogError
		if errors.As(err, &short) && short.Need > n {
			n = (short.Need + 3) &^ 3
			continue
		}
		return l, err
	}
}

// ErrNoANA: the controller does not report Asymmetric Namespace Access.
var ErrNoANA = errors.New("nvmetcp: controller does not report ANA")

// ANAState returns the ANA state of the namespace's group on this
// controller; ok is false when the controller does not report ANA (or
// the namespace is in no group), in which case every path is optimized.
func (n *Namespace) ANAState(ctx context.Context) (st pdu.ANAState, group uint32, ok bool, err error) {
	if n.id.ANAGRPID == 0 || n.c.Info().CMIC&pdu.CMICANA == 0 {
		return 0, 0, false, nil
	}
	l, err := n.c.ANALog(ctx)
	if err != nil {
		return 0, n.id.ANAGRPID, true, err
	}
	g, found := l.Group(n.id.ANAGRPID)
	if !found {
		return 0, n.id.ANAGRPID, true, fmt.Errorf("nvmetcp: ANA log has no group %d (namespace %d)", n.id.ANAGRPID, n.nsid)
	}
	return g.State, g.ID, true, nil
}

// IsANAStatus reports whether err is a command ended with an ANA path
// status (persistent loss, inaccessible, transition): it was not
// executed, and another path may take it once the ANA states are read
// again.
func IsANAStatus(err error) bool {
	var se *StatusError
	return errors.As(err, &se) && se.Status.IsANA()
}

// ActiveNamespaces lists the active namespace IDs (Identify CNS 02h, NVMe
// Base 2.0, Section 5.17.2.2), up to the first 1024; a controller that
// refuses CNS 02h is asked namespace by namespace up to its NN (at most
// 1024).
func (c *Controller) ActiveNamespaces(ctx context.Context) ([]uint32, error) {
	buf := make([]byte, pdu.IdentifyLen)
	cqe, err := c.exec(ctx, true, "identify active namespace list", pdu.SQE{Opcode: pdu.AdminIdentify,
		CDW: [6]uint32{pdu.CNSActiveNSList}}, nil, buf, nil)
	if err != nil {
		return nil, err
	}
	var out []uint32
	if cqe.StatusField().OK() {
		for i := 0; i+4 <= len(buf); i += 4 {
			id := uint32(buf[i]) | uint32(buf[i+1])<<8 | uint32(buf[i+2])<<16 | uint32(buf[i+3])<<24
			if id == 0 {
				break
			}
			out = append(out, id)
		}
		return out, nil
	}
	nn := min(c.Info().NN, 1024)
	for id := uint32(1); id <= nn; id++ {
		ns, err := c.IdentifyNamespace(ctx, id)
		var se *StatusError
		if errors.As(err, &se) {
			continue
		}
		if err != nil {
			return out, err
		}
		if ns.NSZE != 0 {
			out = append(out, id)
		}
	}
	return out, nil
}
