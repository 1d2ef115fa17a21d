package initiator_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/initiator"
)

// serveOnce listens on loopback and runs answer on the first connection.
func serveOnce(t *testing.T, answer func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		answer(c)
	}()
	return ln.Addr().String()
}

// A portal that is another service gets a sentence a beginner understands
// (UX review #55, #56), not PDU decoder internals.
func TestLoginToSomethingElse(t *testing.T) {
	for _, tc := range []struct {
		name   string
		answer func(net.Conn)
		want   []string
		is     error
	}{
		{"ssh", func(c net.Conn) {
			c.Write([]byte("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n\x00\x00\x04\x1c\x0a\x14 binary key exchange follows ..."))
			io.Copy(io.Discard, c)
		}, []string{"not an iSCSI target", `"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"`, "is the port right?"}, initiator.ErrNotTarget},
		{"http", func(c net.Conn) {
			c.Read(make([]byte, 48))
			c.Write([]byte("HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n400 Bad Request"))
		}, []string{"not an iSCSI target", `"HTTP/1.1 400 Bad Request"`}, initiator.ErrNotTarget},
		{"binary", func(c net.Conn) {
			b := make([]byte, 64)
			b[0] = 0x13 // not a target opcode
			c.Write(b)
			io.Copy(io.Discard, c)
		}, []string{"not an iSCSI target", "bytes 13 00 00"}, initiator.ErrNotTarget},
		{"silent", func(c net.Conn) { io.Copy(io.Discard, c) },
			[]string{"no answer to the login within 300ms", "is this an iSCSI target"}, os.ErrDeadlineExceeded},
	} {
		t.Run(tc.name, func(t *testing.T) {
			portal := serveOnce(t, tc.answer)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := initiator.Dial(ctx, initiator.Config{InitiatorName: "iqn.2026-12.org.lunbridge.test:init", TargetName: "iqn.2026-12.org.lunbridge.test:t",
				Portal: portal, LoginTimeout: 300 * time.Millisecond, NoRecovery: true})
			if err == nil {
				t.Fatal("login succeeded")
			}
			t.Logf("%v", err)
			var ce *initiator.ConnError
			if !errors.As(err, &ce) {
				t.Errorf("not a ConnError (the CLI's 'cannot connect' exit code): %T", err)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("not %v", tc.is)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q", w)
				}
			}
			for _, jargon := range []string{"malformed", "opcode", "AHS", "i/o timeout"} {
				if strings.Contains(err.Error(), jargon) {
					t.Errorf("error still says %q", jargon)
				}
			}
		})
	}
}
