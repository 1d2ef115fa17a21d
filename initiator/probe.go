package initiator

import (
	"context"
	"encoding/binary"
	"fmt"

	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// bareLUN returns a handle for sending commands to a LUN without
// identifying it first (used for REPORT LUNS and probing non-disk LUNs).
func bareLUN(s *Session, lun uint64) *LUN {
	f := scsi.EncodeLUN(lun)
	return &LUN{s: s, number: lun, field: binary.BigEndian.Uint64(f[:])}
}

// ReportLUNs returns the LUN numbers of the session's target (REPORT LUNS
// sent to LUN 0, as SPC requires every target to answer there).
func ReportLUNs(ctx context.Context, s *Session) ([]uint64, error) {
	l := bareLUN(s, 0)
	size := 16 + 8*256
	for attempt := 0; attempt < 3; attempt++ {
		buf := make([]byte, size)
		n, err := l.execN(ctx, scsi.ReportLUNs(uint32(size)), buf)
		if err != nil {
			return nil, fmt.Errorf("REPORT LUNS: %w", err)
		}
		d, err := scsi.ParseReportLUNs(buf[:n])
		if err != nil {
			return nil, fmt.Errorf("REPORT LUNS: %w", err)
		}
		if need := int(d.ListLength) + 8; need > size && need <= 1<<20 {
			size = need // the list was truncated: ask again with room for all
			continue
		}
		return d.LUNs, nil
	}
	return nil, fmt.Errorf("REPORT LUNS: list keeps growing")
}

// Inquiry returns the standard INQUIRY data of any LUN.
func Inquiry(ctx context.Context, s *Session, lun uint64) (scsi.InquiryData, error) {
	l := bareLUN(s, lun)
	buf := make([]byte, 255)
	n, err := l.execN(ctx, scsi.Inquiry(false, 0, 255), buf)
	if err != nil {
		return scsi.InquiryData{}, err
	}
	return scsi.ParseInquiry(buf[:n])
}
