package nbdbridge

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// errProtocol marks a connection-fatal protocol violation by the client.
var errProtocol = errors.New("nbd: protocol violation")

type handshakeResult struct {
	structured bool
	metaAlloc  bool
	done       bool // the client aborted or only listed: no transmission
}

// handshake runs fixed newstyle negotiation (proto.md, "Fixed newstyle
// negotiation") until NBD_OPT_GO or NBD_OPT_EXPORT_NAME moves to transmission.
func (c *conn) handshake() (handshakeResult, error) {
	var r handshakeResult
	b := make([]byte, 0, 18)
	b = binary.BigEndian.AppendUint64(b, nbdMagic)
	b = binary.BigEndian.AppendUint64(b, optMagic)
	b = binary.BigEndian.AppendUint16(b, flagFixedNewstyle|flagNoZeroes)
	if _, err := c.nc.Write(b); err != nil {
		return r, err
	}
	var hdr [16]byte
	if _, err := io.ReadFull(c.br, hdr[:4]); err != nil {
		return r, err
	}
	cflags := binary.BigEndian.Uint32(hdr[:4])
	// "If the client sets a flag the server does not recognise, the server
	// MUST close the TCP connection."
	if cflags&^(clientFlagFixedNewstyle|clientFlagNoZeroes) != 0 {
		return r, fmt.Errorf("%w: unknown client flags %#x", errProtocol, cflags)
	}
	c.noZeroes = cflags&clientFlagNoZeroes != 0

	for {
		if _, err := io.ReadFull(c.br, hdr[:]); err != nil {
			return r, err
		}
		if m := binary.BigEndian.Uint64(hdr[:8]); m != optMagic {
			return r, fmt.Errorf("%w: bad option magic %#x", errProtocol, m)
		}
		opt := binary.BigEndian.Uint32(hdr[8:12])
		n := binary.BigEndian.Uint32(hdr[12:16])
		if n > maxOptionLength {
			// Never allocate what the client merely claims.
			if opt == optExportName || n > maxDrainOption {
				return r, fmt.Errorf("%w: option %d length %d too large", errProtocol, opt, n)
			}
			if _, err := io.CopyN(io.Discard, c.br, int64(n)); err != nil {
				return r, err
			}
			if err := c.optError(opt, repErrTooBig, "option data too large"); err != nil {
				return r, err
			}
			continue
		}
		data := make([]byte, n)
		if _, err := io.ReadFull(c.br, data); err != nil {
			return r, err
		}
		c.log.WithField("option", opt).Trace("nbd: option")

		if c.refusing {
			if opt == optAbort {
				c.optReply(opt, repAck, nil)
				r.done = true
				return r, nil
			}
			if opt == optExportName {
				return r, errors.New("nbd: client refused: connection limit reached")
			}
			if err := c.optError(opt, repErrPolicy, "server is at its client limit (lunbridge serve --shared)"); err != nil {
				return r, err
			}
			continue
		}

		var err error
		switch opt {
		case optExportName:
			if !c.s.nameOK(string(data)) {
				// EXPORT_NAME cannot report an error: hang up.
				return r, fmt.Errorf("nbd: client asked for unknown export %q", data)
			}
			b := make([]byte, 0, 10+124)
			b = binary.BigEndian.AppendUint64(b, uint64(c.s.dev.Size()))
			b = binary.BigEndian.AppendUint16(b, c.s.TransmissionFlags(r.structured))
			if !c.noZeroes {
				b = append(b, make([]byte, 124)...)
			}
			_, err = c.nc.Write(b)
			return r, err
		case optAbort:
			// "the server SHOULD reply with NBD_REP_ACK" and close.
			c.optReply(opt, repAck, nil)
			r.done = true
			return r, nil
		case optList:
			if len(data) != 0 {
				err = c.optError(opt, repErrInvalid, "NBD_OPT_LIST takes no data")
				break
			}
			name := []byte(c.s.opts.ExportName)
			p := binary.BigEndian.AppendUint32(nil, uint32(len(name)))
			p = append(p, name...)
			p = append(p, c.s.opts.Description...)
			if err = c.optReply(opt, repServer, p); err == nil {
				err = c.optReply(opt, repAck, nil)
			}
		case optInfo, optGo:
			var ok bool
			ok, err = c.optInfoGo(opt, data, r.structured)
			if err == nil && ok && opt == optGo {
				return r, nil
			}
		case optStructuredReply:
			switch {
			case len(data) != 0:
				err = c.optError(opt, repErrInvalid, "NBD_OPT_STRUCTURED_REPLY takes no data")
			case r.structured:
				err = c.optError(opt, repErrInvalid, "structured replies already negotiated")
			default:
				r.structured = true
				err = c.optReply(opt, repAck, nil)
			}
		case optListMetaContext, optSetMetaContext:
			var sel, selected bool
			sel, selected, err = c.optMetaContext(opt, data, r.structured)
			if sel {
				r.metaAlloc = selected
			}
		default: // includes STARTTLS: we have no TLS
			err = c.optError(opt, repErrUnsup, "")
		}
		if err != nil {
			return r, err
		}
	}
}

func (s *Server) nameOK(name string) bool {
	return name == "" || name == s.opts.ExportName
}

// optInfoGo answers NBD_OPT_INFO and NBD_OPT_GO. ok reports success (for GO:
// move to transmission).
//
//	C: name length u32 | name | number of info requests u16 | info u16...
func (c *conn) optInfoGo(opt uint32, data []byte, structured bool) (ok bool, err error) {
	if len(data) < 6 {
		return false, c.optError(opt, repErrInvalid, "short NBD_OPT_INFO/GO")
	}
	nlen := binary.BigEndian.Uint32(data[:4])
	if uint64(nlen) > uint64(len(data)-6) || nlen > maxStringLength {
		return false, c.optError(opt, repErrInvalid, "bad name length")
	}
	name := string(data[4 : 4+nlen])
	rest := data[4+nlen:]
	nreq := int(binary.BigEndian.Uint16(rest[:2]))
	if len(rest) != 2+2*nreq {
		return false, c.optError(opt, repErrInvalid, "bad information request count")
	}
	if !c.s.nameOK(name) {
		return false, c.optError(opt, repErrUnknown, fmt.Sprintf("unknown export %q", name))
	}
	var wantName, wantDesc bool
	for i := 0; i < nreq; i++ {
		switch binary.BigEndian.Uint16(rest[2+2*i:]) {
		case infoName:
			wantName = true
		case infoDescription:
			wantDesc = true
		}
	}
	p := binary.BigEndian.AppendUint16(nil, infoExport)
	p = binary.BigEndian.AppendUint64(p, uint64(c.s.dev.Size()))
	p = binary.BigEndian.AppendUint16(p, c.s.TransmissionFlags(structured))
	if err := c.optReply(opt, repInfo, p); err != nil {
		return false, err
	}
	if wantName {
		p = binary.BigEndian.AppendUint16(p[:0], infoName)
		p = append(p, c.s.opts.ExportName...)
		if err := c.optReply(opt, repInfo, p); err != nil {
			return false, err
		}
	}
	if wantDesc && c.s.opts.Description != "" {
		p = binary.BigEndian.AppendUint16(p[:0], infoDescription)
		p = append(p, c.s.opts.Description...)
		if err := c.optReply(opt, repInfo, p); err != nil {
			return false, err
		}
	}
	// Always sent: clients that do not ask may still honour it.
	p = binary.BigEndian.AppendUint16(p[:0], infoBlockSize)
	p = binary.BigEndian.AppendUint32(p, uint32(c.s.minBS))
	p = binary.BigEndian.AppendUint32(p, uint32(c.s.prefBS))
	p = binary.BigEndian.AppendUint32(p, uint32(c.s.opts.MaxRequest))
	if err := c.optReply(opt, repInfo, p); err != nil {
		return false, err
	}
	return true, c.optReply(opt, repAck, nil)
}

// optMetaContext answers LIST_META_CONTEXT and SET_META_CONTEXT. For SET,
// sel is true and selected tells whether base:allocation is now selected.
//
//	C: export name length u32 | name | number of queries u32 |
//	   (query length u32 | query)...
func (c *conn) optMetaContext(opt uint32, data []byte, structured bool) (sel, selected bool, err error) {
	if opt == optSetMetaContext && !structured {
		// "If the client has not negotiated structured replies, the server
		// MUST reply with NBD_REP_ERR_INVALID" (SET_META_CONTEXT).
		return false, false, c.optError(opt, repErrInvalid, "structured replies not negotiated")
	}
	bad := func() (bool, bool, error) {
		return false, false, c.optError(opt, repErrInvalid, "malformed meta context request")
	}
	if len(data) < 8 {
		return bad()
	}
	nlen := binary.BigEndian.Uint32(data[:4])
	if uint64(nlen) > uint64(len(data)-8) {
		return bad()
	}
	name := string(data[4 : 4+nlen])
	rest := data[4+nlen:]
	nq := binary.BigEndian.Uint32(rest[:4])
	rest = rest[4:]
	var queries []string
	for i := uint32(0); i < nq; i++ {
		if len(rest) < 4 {
			return bad()
		}
		ql := binary.BigEndian.Uint32(rest[:4])
		if uint64(ql) > uint64(len(rest)-4) {
			return bad()
		}
		queries = append(queries, string(rest[4:4+ql]))
		rest = rest[4+ql:]
	}
	if len(rest) != 0 {
		return bad()
	}
	if !c.s.nameOK(name) {
		return false, false, c.optError(opt, repErrUnknown, fmt.Sprintf("unknown export %q", name))
	}
	match := false
	if opt == optListMetaContext && nq == 0 {
		match = true // list everything we have
	}
	for _, q := range queries {
		if q == metaBaseAllocation || (opt == optListMetaContext && q == "base:") {
			match = true
		}
	}
	if match {
		id := uint32(0) // ids in LIST replies carry no meaning
		if opt == optSetMetaContext {
			id = metaAllocationID
		}
		p := binary.BigEndian.AppendUint32(nil, id)
		p = append(p, metaBaseAllocation...)
		if err := c.optReply(opt, repMetaContext, p); err != nil {
			return false, false, err
		}
	}
	return opt == optSetMetaContext, match, c.optReply(opt, repAck, nil)
}

func (c *conn) optReply(opt, typ uint32, data []byte) error {
	b := make([]byte, 0, 20+len(data))
	b = binary.BigEndian.AppendUint64(b, optReplyMagic)
	b = binary.BigEndian.AppendUint32(b, opt)
	b = binary.BigEndian.AppendUint32(b, typ)
	b = binary.BigEndian.AppendUint32(b, uint32(len(data)))
	b = append(b, data...)
	_, err := c.nc.Write(b)
	return err
}

func (c *conn) optError(opt, typ uint32, msg string) error {
	return c.optReply(opt, typ, []byte(msg))
}
