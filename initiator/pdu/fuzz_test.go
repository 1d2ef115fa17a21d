package pdu

import (
	"bytes"
	"path/filepath"
	"testing"
)

// seedPDUs adds the first PDUs of every real capture stream as seeds.
func seedPDUs(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.pcap")
	for _, file := range files {
		for _, data := range tcpStreams(f, file) {
			for i := 0; i+BHSLen <= len(data) && i < 20*BHSLen; i += BHSLen {
				f.Add(data[i : i+min(len(data)-i, 600)])
				break
			}
			if len(data) > 4096 {
				f.Add(data[:4096])
			}
		}
	}
}

// FuzzReader feeds arbitrary bytes to the stream decoder: it must never
// panic, never allocate more than MaxData for a segment, and stop at the end.
func FuzzReader(f *testing.F) {
	seedPDUs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, dig := range []bool{false, true} {
			r := NewReader(bytes.NewReader(data))
			r.MaxData = 65536
			r.HeaderDigest, r.DataDigest = dig, dig
			var b BHS
			for i := 0; i < 1000; i++ {
				if err := r.ReadHeader(&b); err != nil {
					break
				}
				if _, err := Parse(&b); err != nil {
					if err := r.DiscardData(&b); err != nil {
						break
					}
					continue
				}
				d, err := r.ReadDataAlloc(&b)
				if err != nil {
					break
				}
				if len(d) > r.MaxData {
					t.Fatalf("segment of %d bytes over limit", len(d))
				}
			}
		}
	})
}

// FuzzParseBHS: every decoded header re-encodes to a header that decodes to
// the same value.
func FuzzParseBHS(f *testing.F) {
	seedPDUs(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < BHSLen {
			return
		}
		var b BHS
		copy(b[:], data)
		b[4] = 0
		p, err := Parse(&b)
		if err != nil {
			return
		}
		var b2 BHS
		p.MarshalBHS(&b2)
		q, err := Parse(&b2)
		if err != nil {
			t.Fatalf("re-parse of %v: %v", p.Hdr().Opcode, err)
		}
		var b3 BHS
		q.MarshalBHS(&b3)
		if b2 != b3 {
			t.Fatalf("%v not stable", p.Hdr().Opcode)
		}
	})
}

// FuzzParseText: parsed pairs re-encode to text that parses to the same pairs.
func FuzzParseText(f *testing.F) {
	f.Add([]byte("InitiatorName=iqn.x\x00SessionType=Normal\x00"))
	f.Add([]byte("SendTargets=All\x00"))
	f.Add([]byte("TargetName=iqn.a\x00TargetAddress=[::1]:3260,1\x00"))
	f.Add([]byte("CHAP_C=0x0102\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		kvs, err := ParseText(data)
		if err != nil {
			return
		}
		again, err := ParseText(AppendText(nil, kvs...))
		if err != nil || len(again) != len(kvs) {
			t.Fatalf("re-parse: %v %d != %d", err, len(again), len(kvs))
		}
		for _, kv := range kvs {
			DecodeBinary(kv.Value, 1024)
		}
	})
}
