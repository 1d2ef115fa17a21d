package multipath

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

// TestRealReservationEveryPath: Register puts the key on every path's I_T
// nexus (each path has an ISID of its own), so with Write Exclusive –
// Registrants Only writes succeed on whichever path round-robin picks,
// while a session outside the device meets RESERVATION CONFLICT. Release
// unregisters every path.
func TestRealReservationEveryPath(t *testing.T) {
	srv, px := realSetup(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	lun := uint64(srv.LUNNumber(0))
	d, err := Open(ctx, realConfigs(srv, 0, px[0].Addr(), px[1].Addr()), lun, Options{Policy: PolicyRoundRobin, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	const key = 0x4c42_0000_0000_00aa
	if err := d.Register(ctx, key); err != nil {
		t.Fatalf("register: %v", err)
	}
	if err := d.Reserve(ctx, key, 0); err != nil {
		t.Fatalf("reserve: %v", err)
	}
	p := bytes.Repeat([]byte{0x3c}, 4096)
	for i := int64(0); i < 16; i++ {
		if err := d.WriteAt(ctx, p, i*4096, false); err != nil {
			t.Fatalf("write %d through the registered paths: %v", i, err)
		}
	}
	for i, path := range d.Paths() {
		if path.ios.Load() == 0 {
			t.Fatalf("path %d carried no I/O: the test does not cover it", i)
		}
	}
	cfg := realConfigs(srv, 0, srv.Portal)[0]
	s, err := initiator.Dial(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	o, err := initiator.OpenLUN(ctx, s, lun)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := o.PRReadKeys(ctx)
	if err != nil || len(keys.Keys) != 2 || keys.Keys[0] != key || keys.Keys[1] != key {
		t.Fatalf("READ KEYS: %v %+v, want the key once per path", err, keys)
	}
	if err := o.WriteAt(ctx, p, 0, false); !scsi.IsReservationConflict(err) {
		t.Fatalf("write from outside the device: %v, want RESERVATION CONFLICT", err)
	}
	if err := d.Release(ctx, key); err != nil {
		t.Fatalf("release: %v", err)
	}
	if keys, err := o.PRReadKeys(ctx); err != nil || len(keys.Keys) != 0 {
		t.Fatalf("after release: %v %+v", err, keys)
	}
	if err := o.WriteAt(ctx, p, 0, false); err != nil {
		t.Fatalf("write after release: %v", err)
	}
}
