package pdu

import (
	"bytes"
	"encoding/hex"
	"math/rand"
	"reflect"
	"testing"
)

// RFC 7143 Appendix A.4 CRC32C vectors, as sent on the wire.
func TestDigestVectors(t *testing.T) {
	inc, dec := make([]byte, 32), make([]byte, 32)
	ff := bytes.Repeat([]byte{0xff}, 32)
	for i := range inc {
		inc[i] = byte(i)
		dec[i] = byte(31 - i)
	}
	read10, _ := hex.DecodeString("01c00000000000000000000000000000" + "14000000000004000000001400000018" + "28000000000000000200000000000000")
	for _, c := range []struct {
		in   []byte
		wire string
	}{
		{make([]byte, 32), "aa36918a"},
		{ff, "43aba862"},
		{inc, "4e79dd46"},
		{dec, "5cdb3f11"},
		{read10, "563a96d9"},
	} {
		if got := hex.EncodeToString(AppendDigest(nil, Digest(c.in))); got != c.wire {
			t.Errorf("digest of %x...: got %s, want %s", c.in[:4], got, c.wire)
		}
	}
}

// Exact bytes of a SCSI Command: READ(10) from RFC 7143 Appendix A.4.
func TestSCSICommandBytes(t *testing.T) {
	want, _ := hex.DecodeString("01c00000000000000000000000000000" + "14000000000004000000001400000018" + "28000000000000000200000000000000")
	p := &SCSICommand{Header: Header{Final: true, ITT: 0x14000000}, Read: true, EDTL: 0x400, CmdSN: 0x14, ExpStatSN: 0x18}
	copy(p.CDB[:], []byte{0x28, 0, 0, 0, 0, 0, 0, 0, 2, 0})
	var b BHS
	p.MarshalBHS(&b)
	if !bytes.Equal(b[:], want) {
		t.Fatalf("got\n%x\nwant\n%x", b[:], want)
	}
	q, err := Parse(&b)
	if err != nil {
		t.Fatal(err)
	}
	p.Opcode = OpSCSICommand
	if !reflect.DeepEqual(q, PDU(p)) {
		t.Fatalf("round trip: %+v != %+v", q, p)
	}
}

func TestLoginRequestBytes(t *testing.T) {
	p := &LoginRequest{Transit: true, CSG: StageOperational, NSG: StageFullFeature,
		ISID: [6]byte{0x80, 1, 2, 3, 0, 0}, TSIH: 0x1234, CID: 1, CmdSN: 7, ExpStatSN: 9}
	p.ITT = 0xabcd
	var b BHS
	p.MarshalBHS(&b)
	if b[0] != 0x43 || b[1] != 0x87 || b[8] != 0x80 || b[14] != 0x12 || b[15] != 0x34 || b[21] != 1 || b[27] != 7 || b[31] != 9 || b[19] != 0xcd {
		t.Fatalf("bad login request bytes %x", b[:])
	}
}

// Every PDU type round-trips through MarshalBHS/Parse with random fields.
func TestRoundTripAll(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	for op, newPDU := range parsers {
		for i := 0; i < 200; i++ {
			var raw BHS
			rng.Read(raw[:])
			raw[0] = byte(op) | raw[0]&0x40
			raw[4] = 0 // no AHS
			p := newPDU()
			if err := p.UnmarshalBHS(&raw); err != nil {
				continue // random bits may violate a MUST
			}
			var b BHS
			p.MarshalBHS(&b)
			q := newPDU()
			if err := q.UnmarshalBHS(&b); err != nil {
				t.Fatalf("%v: re-parse: %v", op, err)
			}
			if !reflect.DeepEqual(p, q) {
				t.Fatalf("%v: round trip\n%+v\n%+v", op, p, q)
			}
		}
	}
}

func TestUnknownOpcode(t *testing.T) {
	var b BHS
	b[0] = 0x1c
	if _, err := Parse(&b); err == nil {
		t.Fatal("vendor opcode parsed")
	} else if _, ok := err.(UnknownOpcodeError); !ok {
		t.Fatalf("want UnknownOpcodeError, got %T", err)
	}
}

func TestWriterReaderDigests(t *testing.T) {
	for _, dig := range []bool{false, true} {
		var buf bytes.Buffer
		w := NewWriter(&buf)
		w.HeaderDigest, w.DataDigest = dig, dig
		data := make([]byte, 70001) // odd length: padding
		rand.New(rand.NewSource(2)).Read(data)
		out := &DataOut{TTT: 5, DataSN: 3, BufferOffset: 4096}
		if err := w.WritePDU(out, data); err != nil {
			t.Fatal(err)
		}
		if err := w.WritePDU(&NopOut{Header: Header{ITT: ReservedTag, Immediate: true}, TTT: ReservedTag}, nil); err != nil {
			t.Fatal(err)
		}
		wire := append([]byte(nil), buf.Bytes()...)
		r := NewReader(bytes.NewReader(wire))
		r.HeaderDigest, r.DataDigest, r.MaxData = dig, dig, 1<<20
		var b BHS
		if err := r.ReadHeader(&b); err != nil {
			t.Fatal(err)
		}
		got := make([]byte, b.DataSegmentLength())
		if err := r.ReadData(&b, got); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("data: %v", err)
		}
		if err := r.ReadHeader(&b); err != nil || b.Opcode() != OpNopOut {
			t.Fatalf("second PDU: %v %v", err, b.Opcode())
		}
		if !dig {
			continue
		}
		// Flip one data byte: the data digest must catch it.
		bad := append([]byte(nil), wire...)
		bad[BHSLen+4+100] ^= 1
		r = NewReader(bytes.NewReader(bad))
		r.HeaderDigest, r.DataDigest, r.MaxData = true, true, 1<<20
		r.ReadHeader(&b)
		if err := r.ReadData(&b, got); err == nil {
			t.Fatal("data digest error not detected")
		}
		// Flip one header byte: the header digest must catch it.
		bad = append([]byte(nil), wire...)
		bad[20] ^= 1
		r = NewReader(bytes.NewReader(bad))
		r.HeaderDigest, r.MaxData = true, 1<<20
		if err := r.ReadHeader(&b); err == nil {
			t.Fatal("header digest error not detected")
		}
	}
}

func TestReaderEnforcesMaxData(t *testing.T) {
	var b BHS
	b[0] = byte(OpDataIn)
	b.SetDataSegmentLength(1 << 23)
	r := NewReader(bytes.NewReader(b[:]))
	r.MaxData = 262144
	if err := r.ReadHeader(&b); err == nil {
		t.Fatal("oversized data segment accepted")
	}
}

func TestText(t *testing.T) {
	in := []KV{{"InitiatorName", "iqn.2026-11.org.lunbridge:host"}, {"HeaderDigest", "None,CRC32C"}, {"TargetAlias", "LIO Target"}}
	b := AppendText(nil, in...)
	out, err := ParseText(b)
	if err != nil || !reflect.DeepEqual(in, out) {
		t.Fatalf("%v %v", out, err)
	}
	// Missing final NUL tolerated; padding NULs tolerated.
	if out, err := ParseText([]byte("A=1\x00B=2")); err != nil || len(out) != 2 {
		t.Fatalf("%v %v", out, err)
	}
	if out, err := ParseText([]byte("A=1\x00\x00\x00")); err != nil || len(out) != 1 {
		t.Fatalf("%v %v", out, err)
	}
	for _, bad := range []string{"novalue\x00", "=x\x00", "A=1\x00\x00B=2\x00"} {
		if _, err := ParseText([]byte(bad)); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestBinary(t *testing.T) {
	for in, want := range map[string]string{"0x0aFF": "0aff", "0XaFF": "0aff", "0bAQID": "010203", "0bAQI=": "0102"} {
		got, err := DecodeBinary(in, 1024)
		if err != nil || hex.EncodeToString(got) != want {
			t.Errorf("%s: %x %v", in, got, err)
		}
	}
	for _, bad := range []string{"", "12", "0xZZ", "0b!!", "0q12"} {
		if _, err := DecodeBinary(bad, 1024); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if _, err := DecodeBinary("0x"+string(bytes.Repeat([]byte("ab"), 2000)), 1024); err == nil {
		t.Error("over-long binary accepted")
	}
}
