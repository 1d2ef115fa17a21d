package initiator

import "fmt"

// SessionInfo is a snapshot of a session for status output (`lunbridge
// status NAME`): who it is (RFC 7143, Section 4.4.1: initiator name, ISID,
// target name, portal group), where it is logged in, how many connections
// it has and what the login negotiated. JSON names are snake_case.
type SessionInfo struct {
	Target      string `json:"target"`
	Portal      string `json:"portal"` // after redirects
	ISID        string `json:"isid"`   // 12 hex digits
	TSIH        uint16 `json:"tsih"`
	Connections int    `json:"connections"` // live TCP connections (MC/S: more than one)
	Recovering  bool   `json:"recovering"`
	Reconnects  int64  `json:"reconnects"` // successful session recoveries since login
	// ConnRecoveries counts connections recovered inside the session at
	// ERL 2 (same TSIH, tasks reassigned) since login.
	ConnRecoveries int64      `json:"conn_recoveries"`
	Params         ParamsInfo `json:"params"`
}

// ParamsInfo is Params under the RFC's key names, in snake_case.
type ParamsInfo struct {
	HeaderDigest             string `json:"header_digest"` // None or CRC32C
	DataDigest               string `json:"data_digest"`
	MaxRecvDataSegmentLength int    `json:"max_recv_data_segment_length"` // ours
	MaxXmitDataSegmentLength int    `json:"max_xmit_data_segment_length"` // the target's MaxRecvDataSegmentLength
	FirstBurstLength         int    `json:"first_burst_length"`
	MaxBurstLength           int    `json:"max_burst_length"`
	InitialR2T               bool   `json:"initial_r2t"`
	ImmediateData            bool   `json:"immediate_data"`
	MaxOutstandingR2T        int    `json:"max_outstanding_r2t"`
	MaxConnections           int    `json:"max_connections"`
	DataPDUInOrder           bool   `json:"data_pdu_in_order"`
	DataSequenceInOrder      bool   `json:"data_sequence_in_order"`
	DefaultTime2Wait         int    `json:"default_time2wait"`
	DefaultTime2Retain       int    `json:"default_time2retain"`
	ErrorRecoveryLevel       int    `json:"error_recovery_level"`
	TargetPortalGroupTag     int    `json:"target_portal_group_tag"`
	TargetAlias              string `json:"target_alias,omitempty"`
}

func digestName(on bool) string {
	if on {
		return "CRC32C"
	}
	return "None"
}

// Info returns a snapshot of the session. It takes the session's locks
// briefly, one after the other (never both), and does no I/O: cheap enough
// for a status request at any moment, from any goroutine.
func (s *Session) Info() SessionInfo {
	s.connMu.Lock()
	p, tsih, portal := s.params, s.tsih, s.portal
	n := 0
	for _, c := range s.conns {
		select {
		case <-c.done:
		default:
			n++
		}
	}
	s.connMu.Unlock()
	r := s.Recovery()
	return SessionInfo{
		Target: s.cfg.TargetName, Portal: portal, ISID: fmt.Sprintf("%x", s.isid), TSIH: tsih,
		Connections: n, Recovering: r.Recovering, Reconnects: r.Reconnects, ConnRecoveries: r.ConnRecoveries,
		Params: ParamsInfo{
			HeaderDigest: digestName(p.HeaderDigest), DataDigest: digestName(p.DataDigest),
			MaxRecvDataSegmentLength: p.MaxRecvDSL, MaxXmitDataSegmentLength: p.MaxXmitDSL,
			FirstBurstLength: p.FirstBurstLength, MaxBurstLength: p.MaxBurstLength,
			InitialR2T: p.InitialR2T, ImmediateData: p.ImmediateData,
			MaxOutstandingR2T: p.MaxOutstandingR2T, MaxConnections: p.MaxConnections,
			DataPDUInOrder: p.DataPDUInOrder, DataSequenceInOrder: p.DataSeqInOrder,
			DefaultTime2Wait: p.DefaultTime2Wait, DefaultTime2Retain: p.DefaultTime2Ret,
			ErrorRecoveryLevel: p.ErrorRecoveryLvl, TargetPortalGroupTag: p.TargetPortalGroupTag,
			TargetAlias: p.TargetAlias,
		},
	}
}
