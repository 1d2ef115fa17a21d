//go:build !linux

package blockcopy

import (
	"errors"
	"os"
)

func nextData(f *os.File, off, end int64) (int64, bool) { return off, false }
func nextHole(f *os.File, off, end int64) int64         { return end }
func punchHole(f *os.File, off, n int64) error {
	return errors.New("blockcopy: hole punching not supported on this system")
}

func openDirect(path string) (*os.File, int) { return nil, 0 }

func inMemory(f *os.File) bool { return false }

func rawPwrite(f *os.File, b []byte, off int64) error {
	_, err := f.WriteAt(b, off)
	return err
}
