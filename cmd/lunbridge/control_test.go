package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// memLeg is a leg whose Close leaves the memory disk usable.
type memLeg struct{ blockdev.Device }

func (memLeg) Close() error { return nil }

// TestControlSocketMirror (issue 20 item 4): a running mirror's status is
// on the control socket (also for a client that sends no request, the
// first protocol), and fail/remove/add act on it.
func TestControlSocketMirror(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	a, b := blockdevtest.NewMem(64<<20, 512), blockdevtest.NewMem(64<<20, 512)
	m, err := mirror.Create(ctx, memLeg{a}, memLeg{b}, mirror.CreateOptions{
		Options: mirror.Options{Reopen: func(ctx context.Context, leg int) (blockdev.Device, error) {
			return memLeg{[]*blockdevtest.Mem{a, b}[leg]}, nil
		}},
		ChunkSize: 1 << 20, AssumeClean: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	sock := filepath.Join(t.TempDir(), "control.sock")
	done := make(chan error, 1)
	go func() { done <- serveControlOn(ctx, sock, &controlTarget{mirror: m}) }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if c, err := net.Dial("unix", sock); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("control socket not up")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// First protocol: connect, read to EOF.
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	var st controlStatus
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := json.NewDecoder(c).Decode(&st); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if st.Mirror == nil || st.Status != nil || st.Mirror.Mirror != m.Status().Mirror || st.Mirror.Legs[1].State != "in-sync" {
		t.Fatalf("status: %+v", st)
	}
	cmd := func(req string) controlReply {
		t.Helper()
		raw, err := controlRequest(sock, req, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var r controlReply
		if err := json.Unmarshal(raw, &r); err != nil {
			t.Fatalf("%s: %s: %v", req, raw, err)
		}
		return r
	}
	if r := cmd("mirror remove B"); r.OK || !strings.Contains(r.Error, "fail it first") {
		t.Fatalf("remove of an active leg: %+v", r)
	}
	if r := cmd("mirror fail B"); !r.OK || r.Mirror.Legs[1].State != "failed" || r.Mirror.Legs[1].Held == "" {
		t.Fatalf("fail: %+v", r)
	}
	if r := cmd("mirror fail A"); r.OK || !strings.Contains(r.Error, "last") {
		t.Fatalf("failing the last leg: %+v", r)
	}
	r := cmd("mirror remove B")
	if !r.OK || r.Mirror.Legs[1].State != "removed" {
		t.Fatalf("remove: %+v", r)
	}
	var out bytes.Buffer
	if err := printLiveMirror(&out, r.Mirror); err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^B +removed +0 +- +removed by operator `).MatchString(out.String()) {
		t.Errorf("table:\n%s", out.String())
	}
	t.Logf("after remove:\n%s", out.String())
	if r := cmd("mirror add B"); !r.OK || r.Mirror.Legs[1].ReAdds != 1 {
		t.Fatalf("add: %+v", r)
	}
	if err := m.WaitResync(ctx, time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if r := cmd("mirror frob B"); r.OK || r.Error == "" {
		t.Fatalf("unknown command: %+v", r)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("control server did not stop with its context")
	}
}
