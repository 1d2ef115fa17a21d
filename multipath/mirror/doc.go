// Package mirror implements software RAID-1 over two blockdev.Device legs
// (each leg may itself be a single iSCSI LUN, a multipath set or a file).
//
// It owns: the on-leg metadata (superblock + write-intent bitmap), the
// write path that keeps both legs identical, degraded mode, incremental and
// full resync, split-brain detection and scrubbing (Check). It imports
// blockdev and logrus only; it must not import the initiator or the
// bridges, so any two Devices can be mirrored.
//
// Layout of one leg (data starts at offset 0, so either leg alone is a
// plain image of the mirrored disk, like md's 1.0 superblock):
//
//	0                                  exported      metaStart                         leg end
//	+----------------------------------+-- pad --+------------+------------+----------+----------+
//	| mirrored data                    |         | bitmap A   | bitmap B   | header A | header B |
//	+----------------------------------+---------+------------+------------+----------+----------+
//	                                              bitmapBytes  bitmapBytes    unit       unit
//
// unit is max(4096, block size). Headers sit at fixed offsets from the end
// of the leg, so a reader finds them without knowing the chunk size. A
// metadata update writes the slot not holding the newest valid copy
// (bitmap and header in parallel, both with FUA); the header's CRC32C covers
// the header and records the bitmap's CRC32C, and a slot is read only when
// both match, so a torn update (either write missing or partial) leaves the
// other slot as the newest valid one.
//
// Header (little endian, CRC32C over the first 512 bytes with the CRC
// field zeroed):
//
//	0   magic "LBMIRR01"     8   version u32     12  header CRC u32
//	16  mirror UUID [16]     32  leg UUID [16]   48  peer leg UUID [16]
//	64  leg index u32        68  flags u32       72  leg size u64
//	80  exported size u64    88  chunk size u64  96  block size u32
//	100 unit u32             104 bitmap bytes u64
//	112 events u64           120 generation u64  128 generation id u64
//	136 generation time i64  144 in-sync mask u32 148 bitmap CRC u32
//	152 dropped gen u64      160 dropped gen id u64
//	168 resync checkpoint u64 176 resync target i32 180 reserved
//	184 created i64          192 this leg's WWID [64] 256 peer WWID [64]
//	320 update time i64
//	328 owner state u32 (bit 0: active)  332 owner pid u32
//	336 owner since i64  344 assembly id u64  352 owner process start u64
//	360 owner boot id [40]  400 owner host id [48]  448 owner host name [56]
//	504 reserved [8]
//
// The owner fields record the assembly that has the mirror open, from
// Assemble (or Create) until a clean Close; a header without them (all
// zero, as older versions wrote) has no owner. A second assembler refuses
// an active owner unless it is provably dead on this host (pid gone or
// another boot) or Force is given, and Force is refused for an owner
// provably alive on this host. OpenReadOnly reads beside an owner without
// writing anything. With Options.Reserve the owner also holds an SPC-3
// Write Exclusive – Registrants Only reservation on every leg that is a
// blockdev.Reserver, keyed by its assembly id, so another host's initiator
// cannot write the legs; a takeover of a dead
// or forced-out owner replaces that owner's reservation.
//
// Flags: bit 0 clean (written by a clean Close), bit 1 split (this leg's
// last header, written by Split inside its write barrier: the leg is a
// frozen image of the mirror at the header's update time).
//
// Generations: the generation (and a random id, so two legs bumping
// independently never look alike) changes when the set of in-sync legs
// changes. A leg dropped from the set is stale; the survivor records the
// generation it dropped it at and keeps every chunk written since dirty in
// its bitmap, so the stale leg's return needs only those chunks.
//
// Split (split.go) takes a leg out at a write barrier as a frozen,
// crash-consistent image for a backup, readable alone with OpenReadOnly
// beside the owner; Rejoin resyncs only the chunks written since.
package mirror
