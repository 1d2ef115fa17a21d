package nbdbridge

// Handshake magics and flags (proto.md, "Newstyle negotiation").
const (
	nbdMagic        uint64 = 0x4e42444d41474943 // "NBDMAGIC"
	optMagic        uint64 = 0x49484156454F5054 // "IHAVEOPT"
	optReplyMagic   uint64 = 0x3e889045565a9
	requestMagic    uint32 = 0x25609513
	simpleMagic     uint32 = 0x67446698
	structuredMagic uint32 = 0x668e33ef

	flagFixedNewstyle uint16 = 1 << 0
	flagNoZeroes      uint16 = 1 << 1

	clientFlagFixedNewstyle uint32 = 1 << 0
	clientFlagNoZeroes      uint32 = 1 << 1
)

// Options (proto.md, "Option types").
const (
	optExportName      uint32 = 1
	optAbort           uint32 = 2
	optList            uint32 = 3
	optStartTLS        uint32 = 5
	optInfo            uint32 = 6
	optGo              uint32 = 7
	optStructuredReply uint32 = 8
	optListMetaContext uint32 = 9
	optSetMetaContext  uint32 = 10
)

// Option reply types (proto.md, "Option reply types").
const (
	repAck         uint32 = 1
	repServer      uint32 = 2
	repInfo        uint32 = 3
	repMetaContext uint32 = 4

	repErrUnsup    uint32 = 1<<31 + 1
	repErrPolicy   uint32 = 1<<31 + 2
	repErrInvalid  uint32 = 1<<31 + 3
	repErrUnknown  uint32 = 1<<31 + 6
	repErrShutdown uint32 = 1<<31 + 7
	repErrTooBig   uint32 = 1<<31 + 9
)

// Info types for NBD_OPT_INFO / NBD_OPT_GO.
const (
	infoExport      uint16 = 0
	infoName        uint16 = 1
	infoDescription uint16 = 2
	infoBlockSize   uint16 = 3
)

// Transmission flags (proto.md, "Transmission flags").
const (
	FlagHasFlags        uint16 = 1 << 0
	FlagReadOnly        uint16 = 1 << 1
	FlagSendFlush       uint16 = 1 << 2
	FlagSendFUA         uint16 = 1 << 3
	FlagRotational      uint16 = 1 << 4
	FlagSendTrim        uint16 = 1 << 5
	FlagSendWriteZeroes uint16 = 1 << 6
	FlagSendDF          uint16 = 1 << 7
	FlagCanMultiConn    uint16 = 1 << 8
	FlagSendCache       uint16 = 1 << 10
	FlagSendFastZero    uint16 = 1 << 11
)

// Command flags.
const (
	cmdFlagFUA      uint16 = 1 << 0
	cmdFlagNoHole   uint16 = 1 << 1
	cmdFlagDF       uint16 = 1 << 2
	cmdFlagReqOne   uint16 = 1 << 3
	cmdFlagFastZero uint16 = 1 << 4
)

// Commands.
const (
	cmdRead        uint16 = 0
	cmdWrite       uint16 = 1
	cmdDisc        uint16 = 2
	cmdFlush       uint16 = 3
	cmdTrim        uint16 = 4
	cmdCache       uint16 = 5
	cmdWriteZeroes uint16 = 6
	cmdBlockStatus uint16 = 7
	numCmds               = 8
)

var cmdNames = [numCmds]string{"read", "write", "disc", "flush", "trim", "cache", "write_zeroes", "block_status"}

// Structured reply chunk types and flags.
const (
	replyFlagDone uint16 = 1 << 0

	replyNone        uint16 = 0
	replyOffsetData  uint16 = 1
	replyOffsetHole  uint16 = 2
	replyBlockStatus uint16 = 5
	replyError       uint16 = 32769
)

// NBD error values (proto.md, "Error values").
const (
	errPerm     uint32 = 1
	errIO       uint32 = 5
	errNoMem    uint32 = 12
	errInval    uint32 = 22
	errNoSpc    uint32 = 28
	errOverflow uint32 = 75
	errNotSup   uint32 = 95
	errShutdown uint32 = 108
)

const (
	metaBaseAllocation = "base:allocation"
	metaAllocationID   = 1 // the context id we hand out for base:allocation

	maxOptionLength = 64 << 10 // option data we read into memory
	maxDrainOption  = 16 << 20 // larger options are not drained: we hang up
	maxStringLength = 4096     // proto.md: strings MUST be no longer than 4096 bytes

	requestHeaderLen    = 28
	simpleReplyLen      = 16
	structuredHeaderLen = 20
)
