package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	"github.com/urfave/cli/v2"
)

// serve --fork, like qemu-nbd --fork and nbdkit's default: return once the
// server listens, leaving it running in the background (with --pid-file,
// the background process's id). Daemonizing is daemon.go's re-exec, the
// one mount --daemon uses.
//
// This file adds the flag to the serve command registered in serve.go and
// wraps its action, so that serve.go stays as it is: the child's first
// stdout line (the URI, or the --json object) is what the parent prints.
// This file's init runs after serve.go's (files initialize in name order).

// serveReadyEnv names the fd on which a --fork child reports to its
// parent: "ok URI" once listening, or "error MESSAGE".
const serveReadyEnv = "LUNBRIDGE_SERVE_READY_FD"

func init() {
	for _, cmd := range commands {
		if cmd.Name != "serve" {
			continue
		}
		cmd.Flags = append(cmd.Flags, &cli.BoolFlag{Name: "fork", Usage: "return once listening and keep serving in the background (new session, output to /dev/null); with --pid-file, that process's id"})
		cmd.UsageText += " [--fork]"
		cmd.Description = strings.Replace(cmd.Description, "\n\nExamples:", `

--fork detaches into the background once listening: the command prints the
URI and exits 0 (non-zero, with the reason, if serving failed to start), as
qemu-nbd --fork does. Under systemd use Type=notify instead (the shipped
lunbridge-serve@.service).

Examples:`, 1)
		cmd.Description += "\n   lunbridge serve --fork --pid-file /run/lun1.pid --listen unix:/run/lun1.sock file:///var/tmp/disk.img"
		cmd.Action = forkAction(cmd.Action)
	}
}

func forkAction(serve cli.ActionFunc) cli.ActionFunc {
	return func(c *cli.Context) error {
		ready := daemonReadyPipe(serveReadyEnv)
		if c.Bool("fork") && ready == nil {
			uri, err := startDaemon(c, "serve --fork", serveReadyEnv, func(a string) bool { return boolFlagArg(a, "fork") })
			if err != nil {
				return err
			}
			fmt.Fprintln(c.App.Writer, uri)
			return nil
		}
		if ready == nil {
			return serve(c)
		}
		// The child: the first line serve prints goes to the parent.
		rw := &readyWriter{pipe: ready}
		c.App.Writer = rw
		err := serve(c)
		rw.fail(err)
		return err
	}
}

// readyWriter hands the first line written to it to the daemon parent as
// "ok LINE"; later output is discarded (stdout is /dev/null anyway).
type readyWriter struct {
	mu   sync.Mutex
	pipe *os.File
	buf  []byte
}

func (w *readyWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pipe == nil {
		return len(p), nil
	}
	w.buf = append(w.buf, p...)
	if i := strings.IndexByte(string(w.buf), '\n'); i >= 0 {
		fmt.Fprintf(w.pipe, "ok %s\n", w.buf[:i])
		w.pipe.Close()
		w.pipe = nil
	} else if len(w.buf) > 64<<10 {
		w.buf = w.buf[:0] // no line in 64 KiB: not the URI
	}
	return len(p), nil
}

// fail reports err to the parent if serve ended before it was ready.
func (w *readyWriter) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.pipe == nil {
		return
	}
	if err == nil {
		err = fmt.Errorf("serve: exited before listening")
	}
	fmt.Fprintf(w.pipe, "error %s\n", strings.ReplaceAll(err.Error(), "\n", " "))
	w.pipe.Close()
	w.pipe = nil
}

var _ io.Writer = (*readyWriter)(nil)
