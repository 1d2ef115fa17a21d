package main

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/blockcopy"
)

func TestPullProgressBar(t *testing.T) {
	var buf bytes.Buffer
	b := &progressBar{w: &buf, tty: true, verb: "pull"}
	b.update(blockcopy.Progress{Done: 512 << 20, Total: 1 << 30, Read: 256 << 20, Holes: 256 << 20, Elapsed: 2 * time.Second})
	b.update(blockcopy.Progress{Done: 1 << 30, Total: 1 << 30, Read: 512 << 20, Holes: 512 << 20, Elapsed: 4 * time.Second})
	b.done()
	out := buf.String()
	for _, want := range []string{"\rpull 512.0 MiB / 1.0 GiB  50.0%  256.0 MiB/s  holes 256.0 MiB  ETA 2s", "\rpull 1.0 GiB / 1.0 GiB 100.0%", "\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress output %q lacks %q", out, want)
		}
	}
	if strings.Count(out, "\n") != 1 {
		t.Errorf("a TTY bar redraws one line: %q", out)
	}
}
