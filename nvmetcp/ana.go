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
