package scsi_test

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/lunbridge/lunbridge/initiator/scsi"
)

func ExampleAppendReadCDB() {
	var buf [16]byte // reused per command: no allocation
	fmt.Printf("% x\n", scsi.AppendReadCDB(buf[:0], 2048, 128, false))
	fmt.Printf("% x\n", scsi.AppendReadCDB(buf[:0], 1<<32, 128, true))
	// Output:
	// 28 00 00 00 08 00 00 00 80 00
	// 88 08 00 00 00 01 00 00 00 00 00 00 00 80 00 00
}

func ExampleCheckStatus() {
	// SCSI Response data segment from tgtd (tgtd-none.pcap): SenseLength
	// 18, fixed-format sense, UNIT ATTENTION 29/00.
	seg, _ := hex.DecodeString("0012700006000000000a00000000290000000000")
	err := scsi.CheckStatus(scsi.StatusCheckCondition, seg)
	fmt.Println(err)
	fmt.Println(scsi.IsUnitAttention(err), scsi.IsRetryable(err))
	var se *scsi.SenseError
	if errors.As(fmt.Errorf("read lba 0: %w", err), &se) {
		fmt.Println(se.Key, se.ASC, se.ASCQ)
	}
	// Output:
	// UNIT ATTENTION: POWER ON, RESET, OR BUS DEVICE RESET OCCURRED (0x06/0x29/0x00)
	// true true
	// UNIT ATTENTION 41 0
}

func ExampleDeviceIdentification_WWID() {
	// INQUIRY VPD 0x83 from LIO (lio-none.pcap), cut at 64 bytes.
	page, _ := hex.DecodeString("008300a9010300106001405abfd000000000000000000000020100194c494f2d4f52472046494c45494f3a766d6c61622d666430005194000400000001519500")
	id, err := scsi.ParseDeviceIdentification(page)
	if err != nil {
		panic(err)
	}
	wwid, _ := id.WWID()
	port, _ := id.RelativeTargetPort()
	fmt.Println(wwid, port, id.Truncated, id.FullLength)
	// Output:
	// naa.6001405abfd000000000000000000000 1 true 173
}

func ExampleParseReadCapacity16() {
	// READ CAPACITY(16) data from tgtd (tgtd-none.pcap).
	data, _ := hex.DecodeString("000000000001ffff000002000003000000000000000000000000000000000000")
	c, _ := scsi.ParseReadCapacity16(data)
	fmt.Println(c.Blocks(), c.BlockLength, c.PhysicalBlockLength(), c.Bytes(), c.LBPME)
	// Output:
	// 131072 512 4096 67108864 false
}
