// Package scsi is lunbridge's pure SCSI codec: it builds command descriptor
// blocks (CDBs) and decodes what a logical unit sends back — status, sense
// data, INQUIRY and VPD pages, READ CAPACITY, REPORT LUNS, GET LBA STATUS,
// MODE SENSE headers and REPORT TARGET PORT GROUPS.
//
// It owns byte layouts only. It performs no I/O, never logs, never starts
// goroutines, and imports nothing but the standard library; in particular it
// must not import any other lunbridge package (initiator, pdu, blockdev, ...)
// — the initiator imports it, never the other way round. A test enforces
// this.
//
// # Standards
//
// Layouts follow T10 SPC-4 (primary commands, sense data, VPD pages), SBC-3
// (block commands, block VPD pages, READ CAPACITY, GET LBA STATUS, UNMAP) and
// SAM-5 (status codes, LUN addressing). Each type cites its section. Where a
// later revision (SBC-4, SPC-5) added a field that is backwards compatible,
// it is decoded too and marked so.
//
// # Building CDBs
//
// Every builder returns a freshly allocated CDB of the exact command length
// (6, 10, 12 or 16 bytes). The hot-path READ and WRITE commands also have
// Append forms (AppendReadCDB, AppendWriteCDB, ...) that append into a
// caller's buffer and allocate nothing when the buffer has room:
//
//	var cdbBuf [16]byte
//	cdb := scsi.AppendReadCDB(cdbBuf[:0], lba, blocks, false)
//
// A 10-byte READ/WRITE looks like this (SBC-3 5.11, 5.35):
//
//	byte  0      1        2    3    4    5    6      7    8    9
//	    +------+--------+-------------------+------+---------+-------+
//	    |opcode| flags  |   LBA (32 bits)   |group | blocks  |control|
//	    +------+--------+-------------------+------+---------+-------+
//	     flags: RDPROTECT/WRPROTECT 7-5, DPO 4, FUA 3
//
// # Parsing
//
// Every parser validates lengths against the input it is given, returns an
// error wrapping ErrTruncated or ErrMalformed instead of panicking, and never
// allocates more than the input size justifies, whatever length a header
// claims. Responses cut short by a small allocation length are normal
// (targets truncate to the allocation length); parsers that can use a prefix
// decode the complete entries they have and report Truncated so the caller
// can reissue the command with the full length.
//
// iSCSI carries sense data in the SCSI Response data segment behind a
// two-byte SenseLength (RFC 7143, Section 11.4.7.2):
//
//	+-------------+---------------------------------+
//	| SenseLength |  sense data (fixed: 0x70/0x71,  |
//	|  (2 bytes)  |  descriptor: 0x72/0x73)         |
//	+-------------+---------------------------------+
//
// ParseSenseData strips that prefix; ParseSense decodes bare sense data.
// CheckStatus turns a status byte plus data segment into a *SenseError that
// the Is... helpers classify (IsUnitAttention, IsRetryable, ...).
package scsi
