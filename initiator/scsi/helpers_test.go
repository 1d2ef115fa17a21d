package scsi

import (
	"encoding/hex"
	"strings"
	"testing"
)

// hx decodes hex, ignoring spaces and newlines, for readable tables.
func hx(t testing.TB, s string) []byte {
	t.Helper()
	s = strings.Join(strings.Fields(s), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex in test table: %v", err)
	}
	return b
}

// mustHex is hx for package-level tables and fuzz seeds.
func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(s), ""))
	if err != nil {
		panic(err)
	}
	return b
}
