package nbdbridge

import (
	"bufio"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/internal/testrig/testenv"
)

// testServer serves dev on a Unix socket in a temp dir until the test ends.
type testServer struct {
	*Server
	sock   string
	uri    string
	cancel context.CancelFunc
	done   chan error
}

func testLogger(t testing.TB) *logrus.Entry {
	l := logrus.New()
	l.SetOutput(testWriter{t})
	l.SetLevel(logrus.InfoLevel)
	if os.Getenv("NBD_TRACE") != "" {
		l.SetLevel(logrus.TraceLevel)
	}
	return logrus.NewEntry(l)
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func startServer(t testing.TB, dev blockdev.Device, opts Options) *testServer {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	dir, err := os.MkdirTemp("", "nbdt")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testServer{Server: NewServer(dev, opts), sock: sock, uri: "nbd+unix:///" + opts.ExportName + "?socket=" + sock, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- ts.Serve(ctx, l) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t testing.TB) {
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			t.Errorf("Serve: %v", err)
		}
		if ok {
			close(ts.done)
		}
	case <-time.After(10 * time.Second):
		t.Errorf("Serve did not return 10s after cancel")
	}
}

// run runs a tool with a timeout and returns its stdout; failure is fatal.
func run(t testing.TB, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", name, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func requireTools(t testing.TB, names ...string) {
	t.Helper()
	for _, n := range names {
		testenv.RequireTool(t, n)
	}
}

func newMemForTest() *blockdevtest.Mem { return blockdevtest.NewMem(1<<20, 512) }

func newReader(r io.Reader) *bufio.Reader { return bufio.NewReader(r) }
