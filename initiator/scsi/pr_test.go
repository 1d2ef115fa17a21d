package scsi

import (
	"bytes"
	"errors"
	"testing"
)

func TestPersistentReserveCDBs(t *testing.T) {
	for _, tc := range []struct {
		name string
		got  []byte
		want []byte
	}{
		{"READ KEYS", PersistentReserveIn(PRInReadKeys, 0x1000),
			[]byte{0x5e, 0x00, 0, 0, 0, 0, 0, 0x10, 0x00, 0}},
		{"READ RESERVATION", PersistentReserveIn(PRInReadReservation, 24),
			[]byte{0x5e, 0x01, 0, 0, 0, 0, 0, 0, 24, 0}},
		{"REGISTER", PersistentReserveOut(PROutRegister, 0),
			[]byte{0x5f, 0x00, 0x00, 0, 0, 0, 0, 0, 24, 0}},
		{"RESERVE WERO", PersistentReserveOut(PROutReserve, PRTypeWriteExclusiveRegsOnly),
			[]byte{0x5f, 0x01, 0x05, 0, 0, 0, 0, 0, 24, 0}},
		{"RELEASE WERO", PersistentReserveOut(PROutRelease, PRTypeWriteExclusiveRegsOnly),
			[]byte{0x5f, 0x02, 0x05, 0, 0, 0, 0, 0, 24, 0}},
		{"CLEAR", PersistentReserveOut(PROutClear, 0),
			[]byte{0x5f, 0x03, 0x00, 0, 0, 0, 0, 0, 24, 0}},
		{"PREEMPT WERO", PersistentReserveOut(PROutPreempt, PRTypeWriteExclusiveRegsOnly),
			[]byte{0x5f, 0x04, 0x05, 0, 0, 0, 0, 0, 24, 0}},
		{"REGISTER AND IGNORE EXISTING KEY", PersistentReserveOut(PROutRegisterAndIgnoreKey, 0),
			[]byte{0x5f, 0x06, 0x00, 0, 0, 0, 0, 0, 24, 0}},
		{"parameters", PROutParams(0x0102030405060708, 0x1112131415161718, false),
			[]byte{1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0, 0, 0, 0, 0, 0, 0, 0}},
		{"parameters APTPL", PROutParams(1, 0, true),
			[]byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0}},
	} {
		if !bytes.Equal(tc.got, tc.want) {
			t.Errorf("%s:\n got % x\nwant % x", tc.name, tc.got, tc.want)
		}
	}
}

func TestParsePR(t *testing.T) {
	keys, err := ParsePRKeys([]byte{0, 0, 0, 7, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0, 0, 0, 0, 0, 0, 0, 0xbb})
	if err != nil || keys.Generation != 7 || len(keys.Keys) != 2 || keys.Keys[0] != 0xaa || keys.Keys[1] != 0xbb {
		t.Fatalf("READ KEYS: %v %+v", err, keys)
	}
	// Truncated by the allocation length: what arrived is parsed.
	if k, err := ParsePRKeys([]byte{0, 0, 0, 1, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0xaa}); err != nil || len(k.Keys) != 1 {
		t.Fatalf("short READ KEYS: %v %+v", err, k)
	}
	if _, err := ParsePRKeys([]byte{0, 0, 0, 1, 0, 0, 0, 5}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("odd READ KEYS length: %v", err)
	}
	if _, err := ParsePRKeys([]byte{0, 0}); !errors.Is(err, ErrTruncated) {
		t.Fatalf("truncated READ KEYS: %v", err)
	}
	r, err := ParsePRReservation([]byte{0, 0, 0, 9, 0, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0xaa, 0, 0, 0, 0, 0, 0x05, 0, 0})
	if err != nil || !r.Held || r.Key != 0xaa || r.Type != PRTypeWriteExclusiveRegsOnly || r.Scope != 0 || r.Generation != 9 {
		t.Fatalf("READ RESERVATION: %v %+v", err, r)
	}
	if r, err := ParsePRReservation([]byte{0, 0, 0, 9, 0, 0, 0, 0}); err != nil || r.Held {
		t.Fatalf("no reservation: %v %+v", err, r)
	}
}

func FuzzParsePR(f *testing.F) {
	f.Add([]byte{0, 0, 0, 7, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0xaa})
	f.Fuzz(func(t *testing.T, b []byte) {
		ParsePRKeys(b)
		ParsePRReservation(b)
	})
}
