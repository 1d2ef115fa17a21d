package targets

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// TgtdRunDir holds tgtd's control sockets and their lock files.
var TgtdRunDir = "/var/run/tgtd"

// controlFree reports whether no tgtd holds the lock of control number n.
func controlFree(n int) bool {
	lock := fmt.Sprintf("%s/socket.%d.lock", TgtdRunDir, n)
	f, err := os.OpenFile(lock, os.O_RDWR, 0)
	if err != nil {
		return os.IsNotExist(err)
	}
	defer f.Close()
	lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: 0, Start: 0, Len: 0}
	if err := syscall.FcntlFlock(f.Fd(), syscall.F_GETLK, &lk); err != nil {
		return false
	}
	return lk.Type == syscall.F_UNLCK
}

func pickControl() int {
	// tgtd accepts -C 0..32767; low numbers are left to people typing them.
	for i := 0; i < 100; i++ {
		n := 1000 + rand.IntN(32768-1000)
		if controlFree(n) {
			return n
		}
	}
	return 1000 + rand.IntN(32768-1000)
}

func (s *Server) tgtadm(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	full := append([]string{"-C", strconv.Itoa(s.Control)}, args...)
	out, err := exec.CommandContext(ctx, "tgtadm", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("tgtadm %s: %v: %s", strings.Join(full, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func logSize(path string) int64 {
	st, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return st.Size()
}

func logSince(path string, off int64) string {
	b, err := os.ReadFile(path)
	if err != nil || int64(len(b)) < off {
		return ""
	}
	return string(b[off:])
}

// startTgtd starts and configures one tgtd. retry means: lost a race for the
// control number or the port; try again with fresh values.
func (s *Server) startTgtd(deadline time.Time) (retry bool, err error) {
	if err := os.MkdirAll(TgtdRunDir, 0o755); err != nil {
		return false, fmt.Errorf("targets: %w", err)
	}
	s.Control = pickControl()
	off := logSize(s.LogFile)
	if err := s.spawn("tgtd", "-f", "-C", strconv.Itoa(s.Control), "--iscsi", "portal="+s.Portal); err != nil {
		return false, err
	}
	end := time.Now().Add(readyTimeout)
	if end.After(deadline) {
		end = deadline
	}
	for {
		out := logSince(s.LogFile, off)
		if !s.alive() {
			if strings.Contains(out, "another tgtd") {
				return true, fmt.Errorf("targets: tgtd control %d taken", s.Control)
			}
			return false, fmt.Errorf("targets: tgtd exited at start (%v); log tail:\n%s", s.waitErrValue(), s.LogTail(20))
		}
		if strings.Contains(out, "Address already in use") {
			return true, fmt.Errorf("targets: tgtd: %s: %w", s.Portal, errPortInUse)
		}
		if _, err := s.tgtadm("--mode", "system", "--op", "show"); err == nil && listenerOwnedBy(s.Portal, s.Pid) {
			break
		}
		if time.Now().After(end) {
			return false, fmt.Errorf("targets: tgtd (pid %d, control %d) not ready on %s within %v; log tail:\n%s",
				s.Pid, s.Control, s.Portal, readyTimeout, s.LogTail(20))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.configureTgtd(); err != nil {
		return false, fmt.Errorf("targets: configure tgtd: %w; log tail:\n%s", err, s.LogTail(20))
	}
	for _, p := range s.ExtraPortals {
		if err := s.tgtdAddPortal(p); err != nil {
			return false, err
		}
	}
	return false, nil
}

func (s *Server) waitErrValue() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.waitErr
}

func (s *Server) configureTgtd() error {
	accounts := map[string]string{}
	account := func(user, secret string) error {
		if old, ok := accounts[user]; ok {
			if old != secret {
				return fmt.Errorf("CHAP user %q used with two different secrets (tgtd accounts are per daemon)", user)
			}
			return nil
		}
		accounts[user] = secret
		_, err := s.tgtadm("--lld", "iscsi", "--mode", "account", "--op", "new", "--user", user, "--password", secret)
		return err
	}
	for i, t := range s.Targets {
		tid := strconv.Itoa(i + 1)
		if _, err := s.tgtadm("--lld", "iscsi", "--mode", "target", "--op", "new", "--tid", tid, "--targetname", t.Name); err != nil {
			return err
		}
		for j, l := range t.LUNs {
			lun := strconv.Itoa(j + 1)
			args := []string{"--lld", "iscsi", "--mode", "logicalunit", "--op", "new", "--tid", tid, "--lun", lun}
			if l.BSType == "null" {
				args = append(args, "--bstype", "null", "--backing-store", "/dev/null")
			} else {
				args = append(args, "--backing-store", l.Path)
			}
			if l.BlockSize != 0 {
				args = append(args, "--blocksize", strconv.Itoa(l.BlockSize))
			}
			if _, err := s.tgtadm(args...); err != nil {
				return err
			}
			var params []string
			if l.ReadOnly {
				params = append(params, "readonly=1")
			}
			if l.Thin {
				params = append(params, "thin_provisioning=1")
			}
			if len(params) > 0 {
				// --params is refused by "--op new"; it works on "--op update".
				if _, err := s.tgtadm("--lld", "iscsi", "--mode", "logicalunit", "--op", "update", "--tid", tid, "--lun", lun,
					"--params", strings.Join(params, ",")); err != nil {
					return err
				}
			}
		}
		if _, err := s.tgtadm("--lld", "iscsi", "--mode", "target", "--op", "bind", "--tid", tid, "--initiator-address", "ALL"); err != nil {
			return err
		}
		if t.CHAPUser != "" {
			if err := account(t.CHAPUser, t.CHAPSecret); err != nil {
				return err
			}
			if _, err := s.tgtadm("--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", tid, "--user", t.CHAPUser); err != nil {
				return err
			}
		}
		if t.MutualUser != "" {
			if t.CHAPUser == "" {
				return errors.New("mutual CHAP needs CHAPUser too")
			}
			if err := account(t.MutualUser, t.MutualSecret); err != nil {
				return err
			}
			if _, err := s.tgtadm("--lld", "iscsi", "--mode", "account", "--op", "bind", "--tid", tid, "--user", t.MutualUser, "--outgoing"); err != nil {
				return err
			}
		}
		keys := make([]string, 0, len(t.Params))
		for k := range t.Params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			if _, err := s.tgtadm("--lld", "iscsi", "--mode", "target", "--op", "update", "--tid", tid, "-n", k, "-v", t.Params[k]); err != nil {
				return err
			}
		}
	}
	return nil
}

func (s *Server) tgtdAddPortal(addr string) error {
	if _, err := s.tgtadm("--lld", "iscsi", "--mode", "portal", "--op", "new", "--param", "portal="+addr); err != nil {
		return fmt.Errorf("targets: add portal %s: %w", addr, err)
	}
	end := time.Now().Add(readyTimeout)
	for !listenerOwnedBy(addr, s.Pid) {
		if time.Now().After(end) {
			return fmt.Errorf("targets: tgtd portal %s not listening within %v; log tail:\n%s", addr, readyTimeout, s.LogTail(10))
		}
		time.Sleep(20 * time.Millisecond)
	}
	return nil
}

// AddPortalErr adds a listening portal to a running tgtd ("127.0.0.2" or
// "127.0.0.2:PORT"; without a port the main port is used). It is re-added by
// a restart. istgt: ErrUnsupported (use Options.ExtraPortals).
func (s *Server) AddPortalErr(addr string) error {
	if s.Kind != KindTgtd {
		return fmt.Errorf("%w: istgt cannot add a portal while running (use Options.ExtraPortals)", ErrUnsupported)
	}
	if !strings.Contains(addr, ":") {
		addr = fmt.Sprintf("%s:%d", addr, s.Port)
	}
	if err := s.tgtdAddPortal(addr); err != nil {
		return err
	}
	s.ExtraPortals = append(s.ExtraPortals, addr)
	s.portalSpecs = append(s.portalSpecs, addr)
	return nil
}

func (s *Server) stopTgtd() error {
	for i := range s.Targets {
		// errors ignored: the target may not exist (failed configure)
		_, _ = s.tgtadm("--lld", "iscsi", "--mode", "target", "--op", "delete", "--force", "--tid", strconv.Itoa(i+1))
	}
	var err error
	for try := 0; try < 20; try++ {
		// rc 22 while a target still exists (a forced delete completes asynchronously)
		if _, err = s.tgtadm("--mode", "system", "--op", "delete"); err == nil {
			break
		}
		if !s.alive() {
			err = nil
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !s.waitGone(5 * time.Second) {
		return fmt.Errorf("targets: tgtd pid %d still running 5s after system delete (%v)", s.Pid, err)
	}
	if controlFree(s.Control) {
		os.Remove(fmt.Sprintf("%s/socket.%d", TgtdRunDir, s.Control))
		os.Remove(fmt.Sprintf("%s/socket.%d.lock", TgtdRunDir, s.Control))
	}
	return nil
}
