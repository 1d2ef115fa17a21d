package targets

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// probe is a minimal iSCSI initiator (login without authentication, one
// SCSI command at a time): an independent check that Target.Params and LUN
// options reach the wire, without depending on the project's initiator.
type probe struct {
	c         net.Conn
	tsih      uint16
	expStatSN uint32
	cmdSN     uint32
	itt       uint32
}

func dialProbe(t *testing.T, portal string) *probe {
	t.Helper()
	c, err := net.DialTimeout("tcp", portal, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	return &probe{c: c, cmdSN: 1, itt: 1}
}

func (p *probe) send(bhs, data []byte) error {
	l := len(data)
	bhs[5], bhs[6], bhs[7] = byte(l>>16), byte(l>>8), byte(l)
	for len(data)%4 != 0 {
		data = append(data, 0)
	}
	_, err := p.c.Write(append(bhs, data...))
	return err
}

func (p *probe) recv() (bhs, data []byte, err error) {
	bhs = make([]byte, 48)
	if _, err := io.ReadFull(p.c, bhs); err != nil {
		return nil, nil, err
	}
	if bhs[4] != 0 {
		return nil, nil, fmt.Errorf("unexpected AHS")
	}
	dl := int(bhs[5])<<16 | int(bhs[6])<<8 | int(bhs[7])
	data = make([]byte, (dl+3)&^3)
	if _, err := io.ReadFull(p.c, data); err != nil {
		return nil, nil, err
	}
	return bhs, data[:dl], nil
}

func (p *probe) loginStage(csg, nsg byte, kv [][2]string) (map[string]string, error) {
	var data []byte
	for _, x := range kv {
		data = append(data, x[0]+"="+x[1]...)
		data = append(data, 0)
	}
	bhs := make([]byte, 48)
	bhs[0] = 0x40 | 0x03 // immediate Login Request
	bhs[1] = 0x80 | csg<<2 | nsg
	copy(bhs[8:14], []byte{0x80, 0x12, 0x34, 0x56, 0x78, 0x9a})
	binary.BigEndian.PutUint16(bhs[14:16], p.tsih)
	binary.BigEndian.PutUint32(bhs[16:20], p.itt)
	binary.BigEndian.PutUint32(bhs[24:28], p.cmdSN)
	binary.BigEndian.PutUint32(bhs[28:32], p.expStatSN)
	if err := p.send(bhs, data); err != nil {
		return nil, err
	}
	resp, body, err := p.recv()
	if err != nil {
		return nil, fmt.Errorf("login response: %w", err)
	}
	if resp[0]&0x3f != 0x23 {
		return nil, fmt.Errorf("opcode %#x, not a login response", resp[0])
	}
	if resp[36] != 0 {
		return nil, fmt.Errorf("login status %#02x%02x", resp[36], resp[37])
	}
	if resp[1]&0x40 != 0 {
		return nil, fmt.Errorf("continued login responses are not handled by this probe")
	}
	p.tsih = binary.BigEndian.Uint16(resp[14:16])
	p.expStatSN = binary.BigEndian.Uint32(resp[24:28]) + 1
	keys := map[string]string{}
	for _, x := range strings.Split(string(body), "\x00") {
		if k, v, ok := strings.Cut(x, "="); ok {
			keys[k] = v
		}
	}
	return keys, nil
}

// login runs the security stage (AuthMethod=None) and the operational stage
// with the offered keys; it returns the target's operational answers.
func (p *probe) login(target string, offer [][2]string) (map[string]string, error) {
	sec := [][2]string{
		{"InitiatorName", "iqn.2026-01.io.lunbridge:targets-probe"},
		{"SessionType", "Normal"},
		{"TargetName", target},
		{"AuthMethod", "None"},
	}
	if _, err := p.loginStage(0, 1, sec); err != nil {
		return nil, fmt.Errorf("security stage: %w", err)
	}
	keys, err := p.loginStage(1, 3, offer)
	if err != nil {
		return nil, fmt.Errorf("operational stage: %w", err)
	}
	return keys, nil
}

// scsiIn sends a read-type CDB to a LUN (< 256) and returns the SCSI
// status, the data and the sense bytes. Needs a session without digests.
func (p *probe) scsiIn(lun int, cdb []byte, alloc int) (status byte, data, sense []byte, err error) {
	p.itt++
	bhs := make([]byte, 48)
	bhs[0] = 0x01
	bhs[1] = 0x80 | 0x40 | 0x01 // F, R, SIMPLE
	bhs[9] = byte(lun)
	binary.BigEndian.PutUint32(bhs[16:20], p.itt)
	binary.BigEndian.PutUint32(bhs[20:24], uint32(alloc))
	binary.BigEndian.PutUint32(bhs[24:28], p.cmdSN)
	binary.BigEndian.PutUint32(bhs[28:32], p.expStatSN)
	copy(bhs[32:48], cdb)
	p.cmdSN++
	if err := p.send(bhs, nil); err != nil {
		return 0, nil, nil, err
	}
	for {
		resp, body, err := p.recv()
		if err != nil {
			return 0, nil, nil, err
		}
		switch resp[0] & 0x3f {
		case 0x25: // Data-In
			data = append(data, body...)
			if resp[1]&0x01 != 0 { // status included
				p.expStatSN = binary.BigEndian.Uint32(resp[24:28]) + 1
				return resp[3], data, nil, nil
			}
		case 0x21: // SCSI Response
			p.expStatSN = binary.BigEndian.Uint32(resp[24:28]) + 1
			if resp[3] == 0x02 && len(body) >= 2 {
				n := int(binary.BigEndian.Uint16(body[:2]))
				if 2+n <= len(body) {
					sense = body[2 : 2+n]
				}
			}
			return resp[3], data, sense, nil
		case 0x20: // NOP-In: ignore
		default:
			return 0, nil, nil, fmt.Errorf("unexpected opcode %#x", resp[0])
		}
	}
}

func loginKeys(t *testing.T, portal, target string, offer [][2]string) (map[string]string, error) {
	t.Helper()
	return dialProbe(t, portal).login(target, offer)
}

var probeOffer = [][2]string{
	{"HeaderDigest", "None,CRC32C"},
	{"DataDigest", "None,CRC32C"},
	{"MaxConnections", "8"},
	{"InitialR2T", "No"},
	{"ImmediateData", "Yes"},
	{"MaxRecvDataSegmentLength", "262144"},
	{"MaxBurstLength", "1048576"},
	{"FirstBurstLength", "262144"},
	{"DefaultTime2Wait", "2"},
	{"DefaultTime2Retain", "20"},
	{"MaxOutstandingR2T", "16"},
	{"DataPDUInOrder", "Yes"},
	{"DataSequenceInOrder", "Yes"},
	{"ErrorRecoveryLevel", "0"},
}

func checkKeys(t *testing.T, kind string, got map[string]string, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s answered %s=%q, want %q (all: %v)", kind, k, got[k], v, got)
		}
	}
}

// Target.Params reach the wire on both implementations.
func TestParamsOnTheWire(t *testing.T) {
	t.Parallel()
	tg := StartTgtd(t,
		Target{LUNs: []LUN{{Size: mib}}, Params: map[string]string{
			"HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None",
			"MaxRecvDataSegmentLength": "4096", "ImmediateData": "No", "MaxBurstLength": "131072", "FirstBurstLength": "16384",
		}},
		Target{LUNs: []LUN{{Size: mib}}},
	)
	got, err := loginKeys(t, tg.Portal, tg.Targets[0].Name, probeOffer)
	if err != nil {
		t.Fatalf("tgtd: %v; log:\n%s", err, tg.LogTail(10))
	}
	checkKeys(t, "tgtd", got, map[string]string{
		"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "MaxRecvDataSegmentLength": "4096",
		"ImmediateData": "No", "MaxBurstLength": "131072", "FirstBurstLength": "16384",
	})
	got, err = loginKeys(t, tg.Portal, tg.Targets[1].Name, probeOffer)
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "tgtd defaults", got, map[string]string{"HeaderDigest": "None", "InitialR2T": "Yes"})
	if v, ok := got["MaxRecvDataSegmentLength"]; ok && v != "8192" { // 8192 is both tgtd's and the RFC default
		t.Errorf("tgtd default MaxRecvDataSegmentLength=%s", v)
	}

	is := StartIstgt(t,
		Target{LUNs: []LUN{{Size: mib}}, Params: map[string]string{
			"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "MaxConnections": "2", "MaxRecvDataSegmentLength": "8192",
			"ImmediateData": "No", "MaxBurstLength": "131072", "FirstBurstLength": "16384",
			"MaxOutstandingR2T": "4", "DefaultTime2Wait": "5", "DefaultTime2Retain": "10",
		}},
		Target{LUNs: []LUN{{Size: mib}}, Params: map[string]string{"MaxConnections": "2", "MaxRecvDataSegmentLength": "8192"}},
	)
	got, err = loginKeys(t, is.Portal, is.Targets[0].Name, probeOffer)
	if err != nil {
		t.Fatalf("istgt: %v; log:\n%s", err, is.LogTail(10))
	}
	checkKeys(t, "istgt", got, map[string]string{
		"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "MaxConnections": "2", "MaxRecvDataSegmentLength": "8192",
		"ImmediateData": "No", "MaxBurstLength": "131072", "FirstBurstLength": "16384",
		"MaxOutstandingR2T": "4", "DefaultTime2Wait": "5", "DefaultTime2Retain": "10",
	})
	got, err = loginKeys(t, is.Portal, is.Targets[1].Name, probeOffer)
	if err != nil {
		t.Fatal(err)
	}
	checkKeys(t, "istgt defaults", got, map[string]string{"HeaderDigest": "None", "DataDigest": "None", "MaxConnections": "2", "ImmediateData": "Yes", "MaxRecvDataSegmentLength": "8192", "FirstBurstLength": "262144"})
}

// GET LBA STATUS (SERVICE ACTION IN(16) 0x9E/0x12) at lba: the provisioning
// status of the first descriptor (0 mapped, 1 deallocated, 2 anchored).
func getLBAStatus(t *testing.T, p *probe, lun int, lba uint64) (byte, error) {
	t.Helper()
	cdb := make([]byte, 16)
	cdb[0], cdb[1] = 0x9e, 0x12
	binary.BigEndian.PutUint64(cdb[2:10], lba)
	binary.BigEndian.PutUint32(cdb[10:14], 64)
	var st byte
	var data, sense []byte
	var err error
	for try := 0; try < 3; try++ {
		st, data, sense, err = p.scsiIn(lun, cdb, 64)
		if err != nil {
			return 0, err
		}
		if !(st == 0x02 && len(sense) > 2 && sense[2]&0x0f == 0x06) {
			break // not a UNIT ATTENTION (the first command after login gets one)
		}
	}
	if st != 0 {
		return 0, fmt.Errorf("GET LBA STATUS: SCSI status %#x sense % x", st, sense)
	}
	if len(data) < 24 || binary.BigEndian.Uint64(data[8:16]) != lba {
		return 0, fmt.Errorf("GET LBA STATUS: short or foreign answer % x", data)
	}
	return data[20] & 0x0f, nil
}

// The thin tgtd LUN answers GET LBA STATUS from the sparse backing file.
func TestThinGetLBAStatus(t *testing.T) {
	t.Parallel()
	s := StartTgtd(t, Target{LUNs: []LUN{{Size: 16 * mib, Thin: true}, {Size: 4 * mib}}})
	writeMarker(t, s.BackingFile(0, 0), 8*mib, bytes.Repeat([]byte{0xa5}, 1<<16))
	p := dialProbe(t, s.Portal)
	if _, err := p.login(s.Targets[0].Name, [][2]string{{"HeaderDigest", "None"}, {"DataDigest", "None"}}); err != nil {
		t.Fatal(err)
	}
	st, err := getLBAStatus(t, p, s.LUNNumber(0), 0)
	if err != nil || st != 1 {
		t.Errorf("thin LUN, hole at LBA 0: status %d, %v (want 1 deallocated)", st, err)
	}
	st, err = getLBAStatus(t, p, s.LUNNumber(0), 8*mib/512)
	if err != nil || st != 0 {
		t.Errorf("thin LUN, data at 8 MiB: status %d, %v (want 0 mapped)", st, err)
	}
	// tgtd 1.0.85 answers GET LBA STATUS on a thick LUN as well (holes of
	// the file show as deallocated); Thin changes LBPME (READ CAPACITY(16),
	// see TestTgtd) and enables UNMAP.
	st, err = getLBAStatus(t, p, s.LUNNumber(1), 0)
	t.Logf("thick LUN GET LBA STATUS at 0: status %d, %v", st, err)
}
