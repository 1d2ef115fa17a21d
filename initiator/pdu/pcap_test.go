package pdu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// tcpStreams reads a classic little-endian Ethernet pcap of IPv4/TCP traffic
// and returns the payload of each direction of each TCP connection,
// concatenated in capture order (loopback captures have no loss). Keys are
// "srcport>dstport".
func tcpStreams(t testing.TB, path string) map[string][]byte {
	t.Helper()
	d, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(d) < 24 || binary.LittleEndian.Uint32(d) != 0xa1b2c3d4 {
		t.Fatalf("%s: not a little-endian pcap", path)
	}
	le := binary.LittleEndian
	streams := map[string][]byte{}
	seen := map[string]map[uint32]bool{}
	for off := 24; off+16 <= len(d); {
		incl := int(le.Uint32(d[off+8:]))
		pkt := d[off+16 : off+16+incl]
		off += 16 + incl
		if len(pkt) < 14+20 || pkt[12] != 0x08 || pkt[13] != 0x00 {
			continue
		}
		ip := pkt[14:]
		ihl := int(ip[0]&0x0f) * 4
		if ip[9] != 6 {
			continue
		}
		tot := int(binary.BigEndian.Uint16(ip[2:]))
		tcp := ip[ihl:tot]
		doff := int(tcp[12]>>4) * 4
		payload := tcp[doff:]
		if len(payload) == 0 {
			continue
		}
		key := string(rune(binary.BigEndian.Uint16(tcp[0:]))) + ">" + string(rune(binary.BigEndian.Uint16(tcp[2:])))
		seq := binary.BigEndian.Uint32(tcp[4:])
		if seen[key] == nil {
			seen[key] = map[uint32]bool{}
		}
		if seen[key][seq] { // retransmission
			continue
		}
		seen[key][seq] = true
		streams[key] = append(streams[key], payload...)
	}
	return streams
}

// decodeStream decodes every PDU in one direction of a connection, turning on
// digests as the login negotiated them (read from the Login Responses of the
// same connection, passed in as digest flags after login).
func decodeStream(t testing.TB, data []byte, hdigest, ddigest bool) (n int, ops map[Opcode]int, err error) {
	r := NewReader(bytes.NewReader(data))
	r.MaxData = 1 << 24
	ops = map[Opcode]int{}
	var bhs BHS
	inLogin := true
	for {
		if err := r.ReadHeader(&bhs); err != nil {
			if err == io.EOF {
				return n, ops, nil
			}
			return n, ops, err
		}
		p, err := Parse(&bhs)
		if err != nil {
			return n, ops, err
		}
		if _, err := r.ReadDataAlloc(&bhs); err != nil {
			return n, ops, err
		}
		ops[bhs.Opcode()]++
		n++
		// Login ends with T=1, NSG=3 on both sides; digests start after it.
		switch l := p.(type) {
		case *LoginRequest:
			if l.Transit && l.NSG == StageFullFeature && inLogin {
				inLogin = false
				r.HeaderDigest, r.DataDigest = hdigest, ddigest
			}
		case *LoginResponse:
			if l.Transit && l.NSG == StageFullFeature && inLogin {
				inLogin = false
				r.HeaderDigest, r.DataDigest = hdigest, ddigest
			}
		}
	}
}

// TestRealCaptures decodes every PDU of real tgtd, istgt and LIO traffic
// (recorded with libiscsi and qemu as initiators; see
// ../../../shared/ref/captures/README.md) with the Reader and Parse, header
// digests included, and requires that every byte of every stream is consumed
// by well-formed PDUs.
func TestRealCaptures(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.pcap")
	if len(files) == 0 {
		t.Fatal("no captures in testdata")
	}
	total := 0
	for _, f := range files {
		hd := bytes.Contains([]byte(f), []byte("hdigest"))
		streams := tcpStreams(t, f)
		if len(streams) == 0 {
			t.Fatalf("%s: no TCP payload", f)
		}
		for key, data := range streams {
			n, ops, err := decodeStream(t, data, hd, false)
			// A capture may end inside a PDU only if the connection was
			// cut there; none of ours is.
			if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Errorf("%s stream %q: after %d PDUs: %v", f, key, n, err)
			} else if err != nil {
				t.Errorf("%s stream %q: truncated after %d PDUs", f, key, n)
			}
			if n == 0 {
				t.Errorf("%s stream %q: no PDU decoded", f, key)
			}
			total += n
			_ = ops
		}
	}
	t.Logf("decoded %d PDUs from %d captures", total, len(files))
	if total < 200 {
		t.Fatalf("only %d PDUs decoded", total)
	}
}
