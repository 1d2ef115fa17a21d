package scsi

import "encoding/binary"

// READ and WRITE CDBs: the hot path. The Append forms append to dst and do
// not allocate when cap(dst)-len(dst) >= 16.

// Flag bits in byte 1 of READ/WRITE (SBC-3).
const (
	cdbFUA = 0x08
)

func appendRW10(dst []byte, op byte, lba uint32, blocks uint16, fua bool) []byte {
	var flags byte
	if fua {
		flags = cdbFUA
	}
	dst = append(dst, op, flags)
	dst = binary.BigEndian.AppendUint32(dst, lba)
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint16(dst, blocks)
	return append(dst, 0)
}

func appendRW16(dst []byte, op byte, lba uint64, blocks uint32, fua bool) []byte {
	var flags byte
	if fua {
		flags = cdbFUA
	}
	dst = append(dst, op, flags)
	dst = binary.BigEndian.AppendUint64(dst, lba)
	dst = binary.BigEndian.AppendUint32(dst, blocks)
	return append(dst, 0, 0)
}

// Fits10 reports whether a READ/WRITE of blocks blocks at lba can use the
// 10-byte CDB: every LBA touched fits 32 bits and blocks fits 16.
func Fits10(lba uint64, blocks uint32) bool {
	return lba <= 0xffffffff && lba+uint64(blocks) <= 1<<32 && blocks <= 0xffff
}

// AppendRead10 appends READ(10) (SBC-3).
func AppendRead10(dst []byte, lba uint32, blocks uint16, fua bool) []byte {
	return appendRW10(dst, OpRead10, lba, blocks, fua)
}

// AppendRead16 appends READ(16) (SBC-3).
func AppendRead16(dst []byte, lba uint64, blocks uint32, fua bool) []byte {
	return appendRW16(dst, OpRead16, lba, blocks, fua)
}

// AppendWrite10 appends WRITE(10) (SBC-3).
func AppendWrite10(dst []byte, lba uint32, blocks uint16, fua bool) []byte {
	return appendRW10(dst, OpWrite10, lba, blocks, fua)
}

// AppendWrite16 appends WRITE(16) (SBC-3).
func AppendWrite16(dst []byte, lba uint64, blocks uint32, fua bool) []byte {
	return appendRW16(dst, OpWrite16, lba, blocks, fua)
}

// AppendReadCDB appends READ(10) when Fits10(lba, blocks), else READ(16).
func AppendReadCDB(dst []byte, lba uint64, blocks uint32, fua bool) []byte {
	if Fits10(lba, blocks) {
		return appendRW10(dst, OpRead10, uint32(lba), uint16(blocks), fua)
	}
	return appendRW16(dst, OpRead16, lba, blocks, fua)
}

// AppendWriteCDB appends WRITE(10) when Fits10(lba, blocks), else WRITE(16).
func AppendWriteCDB(dst []byte, lba uint64, blocks uint32, fua bool) []byte {
	if Fits10(lba, blocks) {
		return appendRW10(dst, OpWrite10, uint32(lba), uint16(blocks), fua)
	}
	return appendRW16(dst, OpWrite16, lba, blocks, fua)
}

// Read10 builds READ(10) (SBC-3).
func Read10(lba uint32, blocks uint16, fua bool) []byte {
	return AppendRead10(make([]byte, 0, 10), lba, blocks, fua)
}

// Read16 builds READ(16) (SBC-3).
func Read16(lba uint64, blocks uint32, fua bool) []byte {
	return AppendRead16(make([]byte, 0, 16), lba, blocks, fua)
}

// Write10 builds WRITE(10) (SBC-3).
func Write10(lba uint32, blocks uint16, fua bool) []byte {
	return AppendWrite10(make([]byte, 0, 10), lba, blocks, fua)
}

// Write16 builds WRITE(16) (SBC-3).
func Write16(lba uint64, blocks uint32, fua bool) []byte {
	return AppendWrite16(make([]byte, 0, 16), lba, blocks, fua)
}

// ReadCDB builds READ(10) when Fits10(lba, blocks), else READ(16).
func ReadCDB(lba uint64, blocks uint32, fua bool) []byte {
	return AppendReadCDB(make([]byte, 0, 16), lba, blocks, fua)
}

// WriteCDB builds WRITE(10) when Fits10(lba, blocks), else WRITE(16).
func WriteCDB(lba uint64, blocks uint32, fua bool) []byte {
	return AppendWriteCDB(make([]byte, 0, 16), lba, blocks, fua)
}
