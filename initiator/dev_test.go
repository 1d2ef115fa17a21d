package initiator

import (
	"bytes"
	"context"
	"crypto/rand"
	"os"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestDevLogin(t *testing.T) {
	portal := os.Getenv("DEV_PORTAL")
	if portal == "" {
		t.Skip()
	}
	l := logrus.New()
	l.SetLevel(logrus.DebugLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Dial(ctx, Config{InitiatorName: "iqn.2026-11.org.lunbridge:test", TargetName: os.Getenv("DEV_TARGET"), Portal: portal, Logger: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	t.Logf("params %v", s.Params())
	lun := uint64(1) << 48
	buf := make([]byte, 32)
	for i := 0; i < 3; i++ {
		r, err := s.Do(ctx, &Command{LUN: lun, CDB: []byte{0x9e, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 32, 0, 0}, Read: buf})
		t.Logf("rc16: %+v %v %x", r, err, buf)
	}
	data := make([]byte, 1<<20)
	rand.Read(data)
	cdb := []byte{0x2a, 0, 0, 0, 0, 8, 0, 0x08, 0x00, 0}
	r, err := s.Do(ctx, &Command{LUN: lun, CDB: cdb, Write: data})
	t.Logf("write: %+v %v", r, err)
	got := make([]byte, 1<<20)
	cdb[0] = 0x28
	r, err = s.Do(ctx, &Command{LUN: lun, CDB: cdb, Read: got})
	t.Logf("read: %+v %v equal=%v", r, err, bytes.Equal(got, data))
}
