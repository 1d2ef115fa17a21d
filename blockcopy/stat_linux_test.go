package blockcopy

import (
	"os"
	"syscall"
)

func statBlocks(st os.FileInfo) int64 { return st.Sys().(*syscall.Stat_t).Blocks }
