// Command lbtarget starts and stops a real iSCSI target (tgtd or istgt) with
// a RAM-backed LUN for demos and shell scripts, reusing internal/testrig/targets.
//
//	lbtarget start  --state-dir DIR [--kind tgtd|istgt] [--size 1G] [--block-size 512]
//	                [--name IQN] [--chap-user U --chap-secret-file F]
//	                [--port N | --prefer-port N]
//	lbtarget stop   --state-dir DIR
//	lbtarget status --state-dir DIR
//
// start runs the daemon detached (it survives this command), waits until it
// is ready, writes DIR/state.json and prints the LUN URL on stdout. Running
// start again while the target runs prints the same URL. stop stops the
// daemon and removes its backing files. status exits 0 when running, 3 when
// not.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	code := 0
	switch os.Args[1] {
	case "start":
		err = start(os.Args[2:])
	case "stop":
		err = stop(os.Args[2:])
	case "status":
		code, err = status(os.Args[2:])
	case "null":
		err = serveNull(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "lbtarget: unknown command %q\n", os.Args[1])
		usage()
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "lbtarget: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}

func usage() {
	fmt.Fprint(os.Stderr, `usage:
  lbtarget start  --state-dir DIR [--kind tgtd|istgt] [--size 1G] [--block-size 512]
                  [--name IQN] [--chap-user U --chap-secret-file F] [--port N | --prefer-port N]
  lbtarget stop   --state-dir DIR
  lbtarget status --state-dir DIR
  lbtarget null   --listen 127.0.0.1:3261 [--size 1G] [--block-size 512] [--procs 1]
                  (foreground: a null iSCSI disk for benchmarks, target
                  iqn.2026-12.org.lunbridge:null, LUN 0; SIGTERM stops it)
`)
	os.Exit(2)
}

func logf(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) }

func parseSize(s string) (int64, error) {
	u := strings.ToUpper(strings.TrimSpace(s))
	u = strings.TrimSuffix(strings.TrimSuffix(u, "IB"), "B")
	mult := int64(1)
	if u != "" {
		switch u[len(u)-1] {
		case 'K':
			mult = 1 << 10
		case 'M':
			mult = 1 << 20
		case 'G':
			mult = 1 << 30
		case 'T':
			mult = 1 << 40
		}
		if mult != 1 {
			u = u[:len(u)-1]
		}
	}
	n, err := strconv.ParseInt(u, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 1G, 512M, 1048576)", s)
	}
	return n * mult, nil
}

func printURLs(s *targets.Server) {
	for i, t := range s.Targets {
		for j := range t.LUNs {
			fmt.Println(s.URL(i, j))
		}
		if t.CHAPUser != "" {
			logf("lbtarget: %s needs CHAP user %q (libiscsi: iscsi://%s%%SECRET@%s/...)", t.Name, t.CHAPUser, t.CHAPUser, s.Portal)
		}
	}
}

// running loads the state of a live server; nil when none runs.
func running(dir string) (*targets.Server, error) {
	s, err := targets.LoadState(dir, logf)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if s.Running() {
		return s, nil
	}
	// stale state: the daemon is gone; clean up what it left
	if err := s.Remove(); err != nil {
		logf("lbtarget: removing stale work dir %s: %v", s.WorkDir, err)
	}
	os.Remove(filepath.Join(dir, targets.StateFile))
	return nil, nil
}

func start(args []string) error {
	fl := flag.NewFlagSet("start", flag.ExitOnError)
	kind := fl.String("kind", targets.KindTgtd, "tgtd or istgt")
	stateDir := fl.String("state-dir", "", "directory for state.json (required)")
	size := fl.String("size", "1G", "LUN size (K/M/G/T suffixes, binary)")
	blockSize := fl.Int("block-size", 0, "logical block size (0 = 512)")
	name := fl.String("name", "", "target IQN (generated when empty)")
	chapUser := fl.String("chap-user", "", "one-way CHAP user")
	chapSecretFile := fl.String("chap-secret-file", "", "file holding the CHAP secret")
	port := fl.Int("port", 0, "iSCSI port on 127.0.0.1 (0 = free port)")
	prefer := fl.Int("prefer-port", 0, "port to use when free, else a free one")
	_ = fl.Parse(args)
	if *stateDir == "" || fl.NArg() != 0 {
		usage()
	}
	if s, err := running(*stateDir); err != nil {
		return err
	} else if s != nil {
		logf("lbtarget: already running (%s pid %d)", s.Kind, s.Pid)
		printURLs(s)
		return nil
	}
	n, err := parseSize(*size)
	if err != nil {
		return err
	}
	t := targets.Target{Name: *name, LUNs: []targets.LUN{{Size: n, BlockSize: *blockSize}}}
	if *chapUser != "" {
		if *chapSecretFile == "" {
			return errors.New("--chap-user needs --chap-secret-file")
		}
		b, err := os.ReadFile(*chapSecretFile)
		if err != nil {
			return err
		}
		t.CHAPUser, t.CHAPSecret = *chapUser, strings.TrimSpace(string(b))
		if t.CHAPSecret == "" {
			return fmt.Errorf("%s is empty", *chapSecretFile)
		}
	}
	s, err := targets.Launch(*kind, targets.Options{Port: *port, PreferPort: *prefer, Detached: true, Logf: logf}, t)
	if err != nil {
		return err
	}
	if err := s.SaveState(*stateDir); err != nil {
		_ = s.Close()
		_ = s.Remove()
		return err
	}
	logf("lbtarget: %s pid %d on %s, log %s; stop with: lbtarget stop --state-dir %s", s.Kind, s.Pid, s.Portal, s.LogFile, *stateDir)
	printURLs(s)
	return nil
}

func stop(args []string) error {
	fl := flag.NewFlagSet("stop", flag.ExitOnError)
	stateDir := fl.String("state-dir", "", "directory holding state.json (required)")
	_ = fl.Parse(args)
	if *stateDir == "" {
		usage()
	}
	s, err := targets.LoadState(*stateDir, logf)
	if errors.Is(err, fs.ErrNotExist) {
		logf("lbtarget: not running (no %s)", filepath.Join(*stateDir, targets.StateFile))
		return nil
	}
	if err != nil {
		return err
	}
	if err := s.Close(); err != nil {
		return err
	}
	if err := s.Remove(); err != nil {
		return err
	}
	if err := os.Remove(filepath.Join(*stateDir, targets.StateFile)); err != nil && !os.IsNotExist(err) {
		return err
	}
	logf("lbtarget: stopped %s on %s, backing files removed", s.Kind, s.Portal)
	return nil
}

func status(args []string) (int, error) {
	fl := flag.NewFlagSet("status", flag.ExitOnError)
	stateDir := fl.String("state-dir", "", "directory holding state.json (required)")
	_ = fl.Parse(args)
	if *stateDir == "" {
		usage()
	}
	s, err := targets.LoadState(*stateDir, logf)
	if errors.Is(err, fs.ErrNotExist) {
		logf("lbtarget: not running")
		return 3, nil
	}
	if err != nil {
		return 1, err
	}
	if !s.Running() {
		logf("lbtarget: not running (stale state in %s)", *stateDir)
		return 3, nil
	}
	logf("lbtarget: running: %s pid %d on %s", s.Kind, s.Pid, s.Portal)
	printURLs(s)
	return 0, nil
}
