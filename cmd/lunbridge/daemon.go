package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"
)

// Daemonizing (mount --daemon, serve --fork) re-executes the same command
// line without the flag, detached: a new session, no terminal, stdio on
// /dev/null. The child reports on an inherited pipe (fd 3, named by an
// environment variable): "ok TEXT" once ready, or "error MESSAGE"; the
// parent prints TEXT and exits 0, or exits with the child's code. Secrets
// travel on a second pipe (secrets.go), never in the environment.

// startDaemon starts the detached child and waits for its report. drop
// reports the arguments that ask for daemonizing (--daemon, --fork).
func startDaemon(c *cli.Context, what, readyEnv string, drop func(arg string) bool) (string, error) {
	exe, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	var args []string
	for _, a := range os.Args[1:] {
		if !drop(a) {
			args = append(args, a)
		}
	}
	r, w, err := os.Pipe()
	if err != nil {
		return "", err
	}
	defer r.Close()
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		w.Close()
		return "", err
	}
	defer null.Close()
	// The environment holds no secret any more (takeSecretEnv): they go
	// to the child through a pipe it reads at start.
	secrets, err := secretsPipe()
	if err != nil {
		w.Close()
		return "", fmt.Errorf("%s: %w", what, err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(os.Environ(), readyEnv+"=3")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = null, null, null
	cmd.ExtraFiles = []*os.File{w}
	if secrets != nil {
		defer secrets.Close()
		cmd.Env = append(cmd.Env, secretsFDEnv+"=4")
		cmd.ExtraFiles = append(cmd.ExtraFiles, secrets)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return "", fmt.Errorf("%s: start: %w", what, err)
	}
	w.Close()

	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(r).ReadString('\n')
		line <- strings.TrimSpace(l)
	}()
	var msg string
	select {
	case msg = <-line:
	case <-c.Context.Done():
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()
		return "", c.Context.Err()
	}
	if text, ok := strings.CutPrefix(msg, "ok "); ok {
		return text, cmd.Process.Release()
	}
	werr := cmd.Wait()
	code := ExitFailure
	var ee *exec.ExitError
	if errors.As(werr, &ee) && ee.ExitCode() > 0 {
		code = ee.ExitCode()
	}
	if m, ok := strings.CutPrefix(msg, "error "); ok {
		return "", withCode(code, errors.New(m))
	}
	return "", withCode(code, fmt.Errorf("%s: the background process exited (%v) before it was ready", what, werr))
}

// daemonReadyPipe returns the readiness pipe when this process is a
// daemon child (readyEnv set), else nil.
func daemonReadyPipe(readyEnv string) *os.File {
	s := os.Getenv(readyEnv)
	if s == "" {
		return nil
	}
	os.Unsetenv(readyEnv)
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return nil
	}
	unix.CloseOnExec(fd) // keep it from fusermount3 and other children
	return os.NewFile(uintptr(fd), "daemon-ready")
}

// boolFlagArg reports whether arg is one of the spellings of a boolean
// flag set to true (--name, -name, --name=true, aliases likewise).
func boolFlagArg(arg string, names ...string) bool {
	for _, n := range names {
		for _, p := range []string{"-", "--"} {
			if arg == p+n || arg == p+n+"=true" {
				return true
			}
		}
	}
	return false
}
