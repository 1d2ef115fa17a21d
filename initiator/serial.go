package initiator

// Serial number arithmetic (RFC 1982, SERIAL_BITS = 32), used for CmdSN,
// ExpCmdSN, MaxCmdSN and StatSN (RFC 7143, Section 4.2.2.1).

func serialLT(a, b uint32) bool { return int32(a-b) < 0 }
func serialLE(a, b uint32) bool { return int32(a-b) <= 0 }
func serialGT(a, b uint32) bool { return int32(a-b) > 0 }
