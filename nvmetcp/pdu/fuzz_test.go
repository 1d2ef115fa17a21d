package pdu

import (
	"bytes"
	"testing"
)

func seed(f *testing.F) {
	o := Options{HeaderDigest: true, DataDigest: true}
	data := []byte("12345678")
	for _, p := range []PDU{&ICResp{MaxH2CData: 8192}, &CapsuleResp{CQE: CQE{CID: 1}},
		&R2T{CCCID: 1, Length: 8}, &C2HData{CCCID: 1, Length: 8, Last: true}} {
		n := 0
		if _, ok := p.(*C2HData); ok {
			n = 8
		}
		for _, opt := range []Options{{}, o} {
			b := opt.AppendPDU(nil, p, n)
			if n > 0 {
				b = append(b, data...)
				if opt.DataDigest {
					b = AppendDataDigest(b, data)
				}
			}
			f.Add(b)
		}
	}
	f.Add(AppendTermReq(nil, &TermReq{C2H: true, FES: 1, Data: []byte("bad")}))
}

// FuzzReader feeds arbitrary bytes to the stream decoder as a host reads
// a controller: never a panic, never a data segment over MaxData.
func FuzzReader(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, dig := range []bool{false, true} {
			r := NewReader(bytes.NewReader(data))
			r.MaxData = 65536
			r.HeaderDigest, r.DataDigest = dig, dig
			var h Header
			for range 1000 {
				if err := r.ReadHeader(&h); err != nil {
					break
				}
				if h.DataLen > r.MaxData {
					t.Fatalf("data of %d bytes over limit", h.DataLen)
				}
				if _, err := Parse(&h); err != nil {
					break
				}
				if _, err := r.ReadDataAlloc(&h); err != nil {
					break
				}
			}
		}
	})
}

// FuzzParseRoundTrip: a header that parses re-encodes to one that parses
// to the same PDU.
func FuzzParseRoundTrip(f *testing.F) {
	seed(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data))
		var h Header
		if r.ReadHeader(&h) != nil {
			return
		}
		p, err := Parse(&h)
		if err != nil {
			return
		}
		if tr, ok := p.(*TermReq); ok {
			tr.Data = nil
		}
		b := Options{}.AppendPDU(nil, p, h.DataLen)
		b = append(b, make([]byte, h.DataLen)...)
		r2 := NewReader(bytes.NewReader(b))
		var h2 Header
		if err := r2.ReadHeader(&h2); err != nil {
			t.Fatalf("re-encoded %T does not read: %v", p, err)
		}
		if _, err := Parse(&h2); err != nil {
			t.Fatalf("re-encoded %T does not parse: %v", p, err)
		}
	})
}

// FuzzIdentify: the admin data decoders accept any bytes.
func FuzzIdentify(f *testing.F) {
	f.Add(AppendController(nil, &Controller{Model: "m", IOCCSZ: 4}))
	f.Add(AppendNamespace(nil, &Namespace{NSZE: 8, NLBAF: 63, Formats: []LBAFormat{{DataShift: 12}}}))
	f.Add(AppendDiscoveryEntry(nil, &DiscoveryEntry{SubNQN: "x"}))
	f.Add(AppendANALog(nil, &ANALog{ChangeCount: 1, Groups: []ANAGroup{{ID: 1, State: ANAOptimized, NSIDs: []uint32{1}}}}))
	f.Fuzz(func(t *testing.T, d []byte) {
		ParseController(d)
		if n, err := ParseNamespace(d); err == nil {
			if len(n.Formats) > 64 {
				t.Fatal("too many formats")
			}
			n.BlockSize()
		}
		ParseDiscoveryHeader(d)
		ParseDiscoveryEntries(d)
		ParseDSMRanges(d)
		ParseConnectData(d)
		if l, err := ParseANALog(d); err == nil {
			if got, err := ParseANALog(AppendANALog(nil, &l)); err != nil || len(got.Groups) != len(l.Groups) {
				t.Fatalf("ANA log round trip %+v %+v %v", l, got, err)
			}
		}
		if len(d) >= SQELen {
			s := ParseSQE(d)
			if got := ParseSQE(s.Append(nil)); got != s {
				t.Fatalf("SQE round trip %+v %+v", s, got)
			}
		}
		if len(d) >= CQELen {
			c := ParseCQE(d)
			if got := ParseCQE(c.Append(nil)); got != c {
				t.Fatal("CQE round trip")
			}
		}
	})
}
