package pdu

import (
	"bytes"
	"encoding/hex"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestICReqBytes: an ICReq asking for both digests, as Linux's host sends it
// (PFV 0, HPDA 0, MAXR2T 0) — type 0, HLEN 128, PDO 0, PLEN 128.
func TestICReqBytes(t *testing.T) {
	b := Options{HeaderDigest: true}.AppendPDU(nil, &ICReq{HDGST: true, DDGST: true}, 0)
	want := append(unhex(t, "00 00 80 00 80000000 0000 00 03 00000000"), make([]byte, 112)...)
	if !bytes.Equal(b, want) {
		t.Fatalf("got  %x\nwant %x", b, want)
	}
}

// TestCapsuleBytes: a Read of 8 blocks at LBA 0x1234 on NSID 1, CID 7,
// with a header digest: the SQE sits at byte 8, the digest after HLEN 72.
func TestCapsuleBytes(t *testing.T) {
	sqe := SQE{Opcode: IORead, Flags: PSDTSGL, CID: 7, NSID: 1,
		SGL: SGL{Length: 4096, Type: SGLTransport}, CDW: [6]uint32{0x1234, 0, 7}}
	b := Options{HeaderDigest: true}.AppendPDU(nil, &CapsuleCmd{SQE: sqe}, 0)
	if len(b) != 76 {
		t.Fatalf("len %d", len(b))
	}
	want := unhex(t, `04 01 48 00 4c000000
		02 40 0700 01000000 00000000 00000000 0000000000000000
		0000000000000000 00100000 000000 5a
		34120000 00000000 07000000 00000000 00000000 00000000`)
	if !bytes.Equal(b[:72], want) {
		t.Fatalf("got  %x\nwant %x", b[:72], want)
	}
	var h Header
	r := NewReader(bytes.NewReader(b))
	r.HeaderDigest = true
	if err := r.ReadHeader(&h); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(&h)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.(*CapsuleCmd).SQE; got != sqe {
		t.Fatalf("parsed %+v", got)
	}
	b[20] ^= 1
	r = NewReader(bytes.NewReader(b))
	r.HeaderDigest = true
	if err := r.ReadHeader(&h); !errors.Is(err, ErrHeaderDigest) {
		t.Fatalf("corrupt header: %v", err)
	}
}

// TestRoundTrip: every PDU type re-parses to itself, with and without
// digests and alignment; data and its digest come back.
func TestRoundTrip(t *testing.T) {
	data := []byte("0123456789abcdef0123")
	pdus := []struct {
		p    PDU
		data []byte
	}{
		{&ICReq{HPDA: 3, HDGST: true, MaxR2T: 5}, nil},
		{&ICResp{CPDA: 1, DDGST: true, MaxH2CData: 131072}, nil},
		{&CapsuleCmd{SQE: ConnectSQE(0, 31, 15000)}, data},
		{&CapsuleResp{CQE: CQE{Result: 1 << 40, SQHead: 3, CID: 9, Status: MakeStatus(1, 0x82, true)}}, nil},
		{&H2CData{CCCID: 4, TTag: 2, Offset: 8, Length: uint32(len(data)), Last: true}, data},
		{&C2HData{CCCID: 4, Offset: 16, Length: uint32(len(data)), Last: true, Success: true}, data},
		{&R2T{CCCID: 5, TTag: 1, Offset: 4096, Length: 8192}, nil},
	}
	for _, o := range []Options{{}, {HeaderDigest: true, DataDigest: true}, {DataAlign: 32, DataDigest: true}} {
		for _, tc := range pdus {
			b := o.AppendPDU(nil, tc.p, len(tc.data))
			b = append(b, tc.data...)
			if o.DataDigest && len(tc.data) > 0 {
				b = AppendDataDigest(b, tc.data)
			}
			r := NewReader(bytes.NewReader(b))
			r.HeaderDigest, r.DataDigest = o.HeaderDigest, o.DataDigest
			var h Header
			if err := r.ReadHeader(&h); err != nil {
				t.Fatalf("%v %T: %v", o, tc.p, err)
			}
			if int(h.PLen) != len(b) {
				t.Fatalf("%T: PLEN %d, %d bytes", tc.p, h.PLen, len(b))
			}
			p, err := Parse(&h)
			if err != nil {
				t.Fatalf("%T: %v", tc.p, err)
			}
			if !reflect.DeepEqual(p, tc.p) {
				t.Fatalf("%v: got %+v want %+v", o, p, tc.p)
			}
			if o.DataAlign > 4 && h.DataLen > 0 && int(h.PDO)%o.DataAlign != 0 {
				t.Fatalf("PDO %d not aligned", h.PDO)
			}
			got := make([]byte, h.DataLen)
			if err := r.ReadData(&h, got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, tc.data) && len(tc.data) > 0 {
				t.Fatalf("data %q", got)
			}
		}
	}
}

// TestDataDigestMismatch: a flipped data byte is caught.
func TestDataDigestMismatch(t *testing.T) {
	o := Options{DataDigest: true}
	data := []byte("abcd")
	b := o.AppendPDU(nil, &C2HData{CCCID: 1, Length: 4, Last: true}, 4)
	b = append(append(b, 'x', 'b', 'c', 'd'), AppendDataDigest(nil, data)...)
	r := NewReader(bytes.NewReader(b))
	r.DataDigest = true
	var h Header
	if err := r.ReadHeader(&h); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadData(&h, make([]byte, 4)); !errors.Is(err, ErrDataDigest) {
		t.Fatalf("got %v", err)
	}
}

// TestHostileLengths: a header claiming more data than MaxData, a wrong
// HLEN, DATAL disagreeing with PLEN, PDO inside the header — all refused
// before reading data.
func TestHostileLengths(t *testing.T) {
	big := Options{}.AppendPDU(nil, &C2HData{CCCID: 1, Length: 1 << 30, Last: true}, 1<<30)
	bad := func(mod func(b []byte)) []byte {
		b := Options{}.AppendPDU(nil, &C2HData{CCCID: 1, Length: 8, Last: true}, 8)
		b = append(b, make([]byte, 8)...)
		mod(b)
		return b
	}
	cases := map[string][]byte{
		"huge":      big,
		"hlen":      bad(func(b []byte) { b[2] = 30 }),
		"datal":     bad(func(b []byte) { b[16] = 9 }),
		"pdo":       bad(func(b []byte) { b[3] = 10 }),
		"type":      bad(func(b []byte) { b[0] = 0x08 }),
		"hdgstflag": bad(func(b []byte) { b[1] |= FlagHDGST }),
		"icreqplen": Options{}.AppendPDU(nil, &ICReq{}, 0)[:8],
	}
	cases["icreqplen"][4] = 200
	for name, b := range cases {
		r := NewReader(bytes.NewReader(b))
		r.MaxData = 1 << 20
		var h Header
		err := r.ReadHeader(&h)
		if err == nil {
			_, err = Parse(&h)
		}
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestTermReq: a C2HTermReq carries the offending header, never more than
// 128 bytes, and no digest even when digests are on.
func TestTermReq(t *testing.T) {
	b := AppendTermReq(nil, &TermReq{C2H: true, FES: FESHeaderDigest, FEI: 72, Data: make([]byte, 300)})
	if len(b) != TermHLen+MaxTermData {
		t.Fatalf("len %d", len(b))
	}
	r := NewReader(bytes.NewReader(b))
	r.HeaderDigest, r.DataDigest = true, true
	var h Header
	if err := r.ReadHeader(&h); err != nil {
		t.Fatal(err)
	}
	p, err := Parse(&h)
	if err != nil {
		t.Fatal(err)
	}
	if tr := p.(*TermReq); !tr.C2H || tr.FES != FESHeaderDigest || tr.FEI != 72 {
		t.Fatalf("%+v", tr)
	}
	d, err := r.ReadDataAlloc(&h)
	if err != nil || len(d) != MaxTermData {
		t.Fatalf("%d %v", len(d), err)
	}
}

// TestIdentifyRoundTrip: controller, namespace, discovery and DSM codecs.
func TestIdentifyRoundTrip(t *testing.T) {
	c := Controller{VID: 0x1b36, Serial: "abc123", Model: "Linux", Firmware: "6.1", MDTS: 5, CntlID: 3,
		Version: 0x10300, MaxCmd: 128, NN: 2, ONCS: ONCSDSM | ONCSWriteZeroes, VWC: 1, SGLS: 5,
		SubNQN: "nqn.2026-12.org.lunbridge:sub", IOCCSZ: 260, IORCSZ: 1}
	got, err := ParseController(AppendController(nil, &c))
	if err != nil || got != c {
		t.Fatalf("%+v %v", got, err)
	}
	n := Namespace{NSZE: 2048, NCAP: 2048, NLBAF: 1, FLBAS: 1, DLFEAT: 1,
		Formats: []LBAFormat{{DataShift: 9}, {DataShift: 12}}}
	n.NGUID[0] = 0xaa
	gn, err := ParseNamespace(AppendNamespace(nil, &n))
	if err != nil || !reflect.DeepEqual(gn, n) {
		t.Fatalf("%+v %v", gn, err)
	}
	if bs, err := gn.BlockSize(); bs != 4096 || err != nil {
		t.Fatalf("block size %d %v", bs, err)
	}
	e := DiscoveryEntry{TrType: 3, AdrFam: 1, SubType: 2, PortID: 1, CntlID: 0xffff, ASQSZ: 32,
		TrSvcID: "4420", SubNQN: "nqn.x", TrAddr: "10.0.2.15"}
	es := ParseDiscoveryEntries(AppendDiscoveryEntry(nil, &e))
	if len(es) != 1 || es[0] != e {
		t.Fatalf("%+v", es)
	}
	cd, err := ParseConnectData(AppendConnectData(nil, [16]byte{1}, 0xffff, "nqn.sub", "nqn.host"))
	if err != nil || cd.CntlID != 0xffff || cd.SubNQN != "nqn.sub" || cd.HostNQN != "nqn.host" || cd.HostID[0] != 1 {
		t.Fatalf("%+v %v", cd, err)
	}
	r := DSMRange{Attr: 0, NLB: 8, SLBA: 1 << 33}
	if rs := ParseDSMRanges(AppendDSMRange(nil, r)); len(rs) != 1 || rs[0] != r {
		t.Fatalf("%+v", rs)
	}
	if s := Status(MakeStatus(0, 0x80, true) >> 1); s.String() != "LBA out of range (SCT 0x0 SC 0x80)" || !s.DNR() {
		t.Fatalf("%s dnr=%v", s, s.DNR())
	}
}

// TestANALog: the ANA log page round trip, a page cut short asks for
// the length it needs, and the ANA path statuses carry their names
// (SCT 3 SC 01h persistent loss, 02h inaccessible, 03h transition).
func TestANALog(t *testing.T) {
	l := ANALog{ChangeCount: 7, Groups: []ANAGroup{
		{ID: 1, ChangeCount: 3, State: ANAOptimized, NSIDs: []uint32{1, 2}},
		{ID: 2, ChangeCount: 4, State: ANAInaccessible, NSIDs: []uint32{3}},
	}}
	b := AppendANALog(nil, &l)
	if len(b) != ANAHeaderLen+2*ANADescLen+3*4 {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := ParseANALog(b)
	if err != nil || !reflect.DeepEqual(got, l) {
		t.Fatalf("%+v %v", got, err)
	}
	if g, ok := got.Group(2); !ok || g.State.Usable() || g.State.String() != "inaccessible" {
		t.Fatalf("%+v", g)
	}
	var short *ShortANALogError
	if _, err := ParseANALog(b[:ANAHeaderLen+ANADescLen]); !errors.As(err, &short) || short.Need <= ANAHeaderLen+ANADescLen {
		t.Fatalf("short log: %v", err)
	}
	huge := AppendANALog(nil, &ANALog{Groups: []ANAGroup{{ID: 1}}})
	le.PutUint32(huge[ANAHeaderLen+4:], 1<<30)
	if _, err := ParseANALog(huge); err == nil || errors.As(err, &short) {
		t.Fatalf("a group claiming 2^30 namespaces: %v", err)
	}
	for sc, want := range map[uint8]string{1: "ANA persistent loss", 2: "ANA inaccessible", 3: "ANA transition"} {
		s := Status(MakeStatus(3, sc, false) >> 1)
		if !s.IsANA() || !strings.HasPrefix(s.String(), want+" ") {
			t.Errorf("SCT 3 SC %#x: %q ana=%v, want %q", sc, s, s.IsANA(), want)
		}
	}
	if Status(MakeStatus(3, 0, false) >> 1).IsANA() {
		t.Error("internal path error taken for an ANA status")
	}
	c := Controller{CMIC: CMICANA, OAES: OAESANAChange, ANATT: 10, ANACAP: 0x47, ANAGRPMAX: 128, NANAGRPID: 128}
	if gc, _ := ParseController(AppendController(nil, &c)); gc != c {
		t.Fatalf("%+v", gc)
	}
}
