// Package pdu encodes and decodes iSCSI PDUs (RFC 7143, Section 11).
//
// It owns the Basic Header Segment layout, one Go type per opcode, header and
// data digests (CRC32C), and the key=value text codec. It is a pure codec:
// it never logs, never starts goroutines and imports only the standard
// library.
//
// Every PDU on the wire has this layout (RFC 7143, Section 11.1):
//
//	Byte/     0       |       1       |       2       |       3       |
//	     +---------------+---------------+---------------+---------------+
//	   0 |.|I| Opcode    |F|  Opcode-specific fields                     |
//	     +---------------+---------------+---------------+---------------+
//	   4 |TotalAHSLength | DataSegmentLength                             |
//	     +---------------+---------------+---------------+---------------+
//	   8 | LUN or Opcode-specific fields                                 |
//	     +                                                               +
//	  12 |                                                               |
//	     +---------------+---------------+---------------+---------------+
//	  16 | Initiator Task Tag or Opcode-specific fields                  |
//	     +---------------+---------------+---------------+---------------+
//	  20/ Opcode-specific fields                                         /
//	  +/                                                                 /
//	     +---------------+---------------+---------------+---------------+
//	  48 | AHS (optional, TotalAHSLength*4 bytes)                        |
//	     +---------------+---------------+---------------+---------------+
//	   h | Header-Digest (optional, CRC32C of BHS+AHS, little-endian)    |
//	     +---------------+---------------+---------------+---------------+
//	   d | Data Segment (DataSegmentLength bytes, padded to 4)           |
//	     +---------------+---------------+---------------+---------------+
//	   e | Data-Digest (optional, only when DataSegmentLength > 0)       |
//	     +---------------+---------------+---------------+---------------+
//
// Decoding is split in two steps, as http2's framer does: a Reader reads the
// header (BHS, AHS, header digest) and the caller then decides where the data
// segment goes — straight into the SCSI buffer at the Data-In BufferOffset,
// or into a small bounded buffer for text — so no PDU is copied twice and no
// peer-claimed length is allocated before it is checked against the
// negotiated MaxRecvDataSegmentLength.
package pdu
