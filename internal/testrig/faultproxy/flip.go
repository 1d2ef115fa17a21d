package faultproxy

import (
	"bytes"
	"encoding/binary"
)

// FlipDataIn damages iSCSI Data-In payloads on their way to the initiator
// (issue 22: data digest recovery against a real target). The proxy
// follows the PDU boundaries of each connection's downstream byte stream
// (it reads the digests the Login Response agrees on) and flips one byte
// in the middle of the data segment of the next count Data-In PDUs
// (opcode 0x25) whose data segment is at least minLen bytes, on any
// connection. The header and the digest are left alone, so the
// initiator sees a data digest error (with DataDigest=CRC32C) or silently
// wrong data (without). count 0 disarms.
func (p *Proxy) FlipDataIn(minLen, count int) {
	p.mu.Lock()
	p.flipArm = flipArm{minLen: minLen, left: count}
	p.mu.Unlock()
}

// Flipped returns how many Data-In payloads were damaged so far.
func (p *Proxy) Flipped() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.flipArm.done
}

type flipArm struct {
	minLen, left, done int
}

// maxLoginText bounds the login text kept to find the digests.
const maxLoginText = 64 << 10

// pduTap follows the PDUs of one downstream stream.
type pduTap struct {
	ffp      bool // past the final Login Response: digests apply
	hd, dd   bool // negotiated digests
	hdr      [48]byte
	have     int   // header bytes collected
	skip     int64 // AHS, header digest bytes still to pass before the data
	data     int64 // data segment bytes (with padding) still to pass
	dataLen  int64
	tail     int64 // data digest bytes still to pass
	flipAt   int64 // data byte to flip (counted down with data), -1 none
	login    bool  // the current PDU is a Login Response
	loginFin bool  // ... with T=1 and NSG=3
	text     []byte
}

// tap runs on the downstream pump of c for every chunk before it is
// forwarded; it may change b. Every connection is followed from its first
// byte (a PDU boundary), armed or not, so arming later finds it in step.
func (p *Proxy) tap(c *pair, b []byte) {
	if c.flip == nil {
		c.flip = &pduTap{flipAt: -1}
	}
	c.flip.feed(p, b)
}

func (t *pduTap) feed(p *Proxy, b []byte) {
	for len(b) > 0 {
		switch {
		case t.have < len(t.hdr):
			n := copy(t.hdr[t.have:], b)
			t.have += n
			b = b[n:]
			if t.have == len(t.hdr) {
				t.startPDU(p)
			}
		case t.skip > 0:
			n := min(int64(len(b)), t.skip)
			t.skip -= n
			b = b[n:]
		case t.data > 0:
			n := min(int64(len(b)), t.data)
			if t.flipAt >= 0 && t.flipAt < n {
				b[t.flipAt] ^= 0x01
				t.flipAt = -1
			} else if t.flipAt >= 0 {
				t.flipAt -= n
			}
			if t.login && len(t.text)+int(n) <= maxLoginText {
				t.text = append(t.text, b[:n]...)
			}
			t.data -= n
			b = b[n:]
		case t.tail > 0:
			n := min(int64(len(b)), t.tail)
			t.tail -= n
			b = b[n:]
		}
		if t.have == len(t.hdr) && t.skip == 0 && t.data == 0 && t.tail == 0 {
			t.endPDU()
		}
	}
}

func (t *pduTap) startPDU(p *Proxy) {
	h := &t.hdr
	op := h[0] & 0x3f
	ahs := int64(h[4]) * 4
	dsl := int64(h[5])<<16 | int64(binary.BigEndian.Uint16(h[6:8]))
	t.dataLen = dsl
	t.skip = ahs
	if t.ffp && t.hd {
		t.skip += 4
	}
	t.data = dsl + int64((4-dsl%4)%4)
	t.tail = 0
	if t.ffp && t.dd && dsl > 0 {
		t.tail = 4
	}
	t.login = op == 0x23
	t.loginFin = t.login && h[1]&0x80 != 0 && h[1]&0x03 == 3
	if op == 0x25 && t.ffp && dsl > 0 {
		p.mu.Lock()
		if a := &p.flipArm; a.left > 0 && dsl >= int64(a.minLen) {
			a.left--
			a.done++
			t.flipAt = dsl / 2
		}
		p.mu.Unlock()
	}
}

func (t *pduTap) endPDU() {
	if t.login {
		for _, kv := range bytes.Split(t.text, []byte{0}) {
			switch string(kv) {
			case "HeaderDigest=CRC32C":
				t.hd = true
			case "DataDigest=CRC32C":
				t.dd = true
			}
		}
		t.text = t.text[:0]
		if t.loginFin {
			t.ffp = true
		}
	}
	t.have, t.flipAt, t.login, t.loginFin = 0, -1, false, false
}
