package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
)

// Secrets given in the environment (LUNBRIDGE_CHAP_SECRET and the other
// LUNBRIDGE_*_SECRET variables) are moved out of it as the process starts:
// kept in memory, removed with os.Unsetenv, so that no child process
// (fusermount3, the `mount --daemon` child, a shell-out) inherits them.
// The kernel's copy of the initial environment in /proc/PID/environ stays
// readable by the same user and root, as the process memory does.
//
// `mount --daemon` hands them to its child through an inherited pipe named
// by secretsFDEnv: NAME NUL VALUE NUL pairs, read to EOF and closed before
// anything else happens in the child.
const secretsFDEnv = "LUNBRIDGE_SECRETS_FD"

// maxSecretBytes bounds what the daemon child reads from the pipe, and what
// the parent writes to it (it must fit the pipe buffer: the parent writes
// before starting the child).
const maxSecretBytes = 16 << 10

var secretEnv struct {
	mu   sync.Mutex
	vals map[string]string
}

func isSecretEnv(name string) bool {
	return strings.HasPrefix(name, "LUNBRIDGE_") && strings.HasSuffix(name, "_SECRET") && len(name) > len("LUNBRIDGE__SECRET")
}

// takeSecretEnv moves every LUNBRIDGE_*_SECRET variable from the
// environment into memory. It is called first thing in main and again by
// secretFromEnv, so a variable is never read from the environment twice.
func takeSecretEnv() {
	secretEnv.mu.Lock()
	defer secretEnv.mu.Unlock()
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if !isSecretEnv(k) {
			continue
		}
		if secretEnv.vals == nil {
			secretEnv.vals = make(map[string]string)
		}
		secretEnv.vals[k] = v
		os.Unsetenv(k)
	}
}

// secretFromEnv is the value LUNBRIDGE_..._SECRET had in the environment
// (or the daemon parent's).
func secretFromEnv(name string) string {
	takeSecretEnv()
	secretEnv.mu.Lock()
	defer secretEnv.mu.Unlock()
	return secretEnv.vals[name]
}

// encodeSecrets is the pipe format for a daemon child; nil without secrets.
func encodeSecrets() ([]byte, error) {
	takeSecretEnv()
	secretEnv.mu.Lock()
	defer secretEnv.mu.Unlock()
	var b bytes.Buffer
	for k, v := range secretEnv.vals {
		if strings.IndexByte(v, 0) >= 0 {
			return nil, fmt.Errorf("%s holds a NUL byte", k)
		}
		b.WriteString(k + "\x00" + v + "\x00")
	}
	if b.Len() > maxSecretBytes {
		return nil, fmt.Errorf("secrets in the environment exceed %d bytes", maxSecretBytes)
	}
	return b.Bytes(), nil
}

// secretsPipe returns the read end of a pipe holding the secrets for a
// child process, or nil when there are none.
func secretsPipe() (*os.File, error) {
	data, err := encodeSecrets()
	if err != nil || len(data) == 0 {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	_, err = w.Write(data) // fits the pipe buffer (64 KiB on Linux)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// receiveSecrets reads the secrets a `mount --daemon` parent passed on the
// descriptor named by secretsFDEnv.
func receiveSecrets() error {
	s, ok := os.LookupEnv(secretsFDEnv)
	if !ok {
		return nil
	}
	os.Unsetenv(secretsFDEnv)
	fd, err := strconv.Atoi(s)
	if err != nil || fd < 3 {
		return fmt.Errorf("%s=%q: not a descriptor", secretsFDEnv, s)
	}
	f := os.NewFile(uintptr(fd), "secrets")
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return fmt.Errorf("reading the secrets from the parent: %w", err)
	}
	if len(data) > maxSecretBytes {
		return errors.New("the parent passed too many secret bytes")
	}
	fields := strings.Split(string(data), "\x00")
	if len(fields)%2 != 1 || fields[len(fields)-1] != "" {
		return errors.New("the parent passed malformed secrets")
	}
	secretEnv.mu.Lock()
	defer secretEnv.mu.Unlock()
	for i := 0; i+1 < len(fields); i += 2 {
		if !isSecretEnv(fields[i]) {
			return fmt.Errorf("the parent passed %q, not a secret variable", fields[i])
		}
		if secretEnv.vals == nil {
			secretEnv.vals = make(map[string]string)
		}
		secretEnv.vals[fields[i]] = fields[i+1]
	}
	return nil
}
