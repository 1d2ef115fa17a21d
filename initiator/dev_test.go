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
	l.SetLevel(logrus.InfoLevel)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	s, err := Dial(ctx, Config{InitiatorName: "iqn.2026-11.org.lunbridge:test", TargetName: os.Getenv("DEV_TARGET"), Portal: portal, Logger: logrus.NewEntry(l)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	lun, err := OpenLUN(ctx, s, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("lun: %+v size %d bs %d wwid %s serial %q thin %v", lun.Inquiry, lun.Size(), lun.BlockSize(), lun.WWID(), lun.Serial, lun.Thin())
	data := make([]byte, 16<<20)
	rand.Read(data)
	if err := lun.WriteAt(ctx, data, 4096, false); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(data))
	if err := lun.ReadAt(ctx, got, 4096); err != nil {
		t.Fatal(err)
	}
	t.Logf("equal=%v", bytes.Equal(got, data))
	t.Log(lun.Flush(ctx))
	t.Log(lun.ReadAt(ctx, got[:512], lun.Size()))
}
