package initiator_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// Session.Info reports what the login negotiated, the session's identity
// and its live connections (MC/S on istgt, header digest on), under the
// RFC's key names; it agrees with Params, ISID, TSIH and Connections.
func TestSessionInfoIstgt(t *testing.T) {
	testenv.RequireRoot(t)
	requireKind(t, targets.KindIstgt)
	srv := startKind(t, targets.KindIstgt,
		targets.Target{Name: "iqn.2026-12.org.lunbridge.test:info", LUNs: []targets.LUN{{Size: 8 << 20}}, Params: map[string]string{"MaxConnections": "4"}})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cfg := resilienceConfig(srv, srv.Portal)
	cfg.TargetName = srv.Targets[0].Name
	cfg.MaxConnections = 2
	cfg.HeaderDigest = []string{"CRC32C"}
	s, _ := openLUN(t, ctx, srv, 0, 0, cfg)
	defer s.Close()

	info, p := s.Info(), s.Params()
	isid := s.ISID()
	if info.Target != cfg.TargetName || info.Portal != srv.Portal || info.ISID != fmt.Sprintf("%x", isid[:]) ||
		info.TSIH != s.TSIH() || info.TSIH == 0 || info.Connections != 2 || info.Recovering || info.Reconnects != 0 {
		t.Fatalf("info: %+v (ISID %x, TSIH %d)", info, isid, s.TSIH())
	}
	ip := info.Params
	if ip.HeaderDigest != "CRC32C" || ip.DataDigest != "None" || ip.MaxConnections != 2 ||
		ip.MaxRecvDataSegmentLength != p.MaxRecvDSL || ip.MaxXmitDataSegmentLength != p.MaxXmitDSL ||
		ip.MaxBurstLength != p.MaxBurstLength || ip.FirstBurstLength != p.FirstBurstLength ||
		ip.ImmediateData != p.ImmediateData || ip.InitialR2T != p.InitialR2T || ip.ErrorRecoveryLevel != p.ErrorRecoveryLvl ||
		ip.TargetPortalGroupTag != p.TargetPortalGroupTag || ip.MaxBurstLength < 512 {
		t.Fatalf("params: %+v\nnegotiated: %v", ip, p)
	}
}
