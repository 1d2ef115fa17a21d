// Package pdu encodes and decodes NVMe/TCP PDUs (NVM Express TCP Transport
// Specification 1.0, Section 3.6) and the NVMe structures they carry: the
// 64-byte submission queue entry, the 16-byte completion queue entry, the
// Fabrics command fields, Identify data and the discovery log page.
//
// It is a pure codec: it never logs, never starts goroutines and imports
// only the standard library.
//
// Every PDU starts with an 8-byte common header (Section 3.6.1):
//
//	Byte/     0       |       1       |       2       |       3       |
//	     +---------------+---------------+---------------+---------------+
//	   0 | PDU-Type      | Flags         | HLEN          | PDO           |
//	     +---------------+---------------+---------------+---------------+
//	   4 | PLEN (little-endian, whole PDU incl. digests and padding)     |
//	     +---------------+---------------+---------------+---------------+
//	   8 / PDU-specific header (HLEN-8 bytes)                            /
//	     +---------------+---------------+---------------+---------------+
//	HLEN | HDGST (optional, CRC32C of the HLEN header bytes)             |
//	     +---------------+---------------+---------------+---------------+
//	     / PAD (to PDO, the data alignment the receiver asked for)       /
//	     +---------------+---------------+---------------+---------------+
//	 PDO / PDU-Data (PLEN-PDO[-4] bytes)                                 /
//	     +---------------+---------------+---------------+---------------+
//	     | DDGST (optional, CRC32C of PDU-Data)                          |
//	     +---------------+---------------+---------------+---------------+
//
// Unlike iSCSI every multi-byte field is little-endian, as in NVMe itself.
//
// Decoding is split in two steps like the iSCSI codec's: a Reader reads the
// header (checking its length for the type and its digest) and the caller
// then decides where the data goes — C2HData straight into the caller's
// buffer at its DATAO — so no peer-claimed length is allocated before it is
// checked against the caller's limit (Reader.MaxData).
package pdu
