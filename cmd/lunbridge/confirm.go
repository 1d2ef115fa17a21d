package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// confirmIO is where confirm asks; tests replace it.
var confirmIO = struct {
	in       io.Reader
	out      io.Writer
	terminal func() bool
}{
	in:       os.Stdin,
	out:      os.Stderr,
	terminal: func() bool { return isTerminal(os.Stdin) && isTerminal(os.Stderr) },
}

// confirm is the one way a destructive command gets permission: yes
// (--yes) allows at once; otherwise a terminal (stdin and stderr) is asked
// question with [y/N], and anything but y/yes refuses (exit 1, nothing
// written); without a terminal it refuses with a usage error (exit 2)
// saying refusal, so a script learns what would be destroyed and to add
// --yes. Callers print what will be overwritten before calling.
func confirm(yes bool, question, refusal string) error {
	if yes {
		return nil
	}
	if !confirmIO.terminal() {
		return usageErrorf("%s", refusal)
	}
	fmt.Fprintf(confirmIO.out, "%s [y/N] ", question)
	answer, _ := bufio.NewReader(confirmIO.in).ReadString('\n')
	if a := strings.ToLower(strings.TrimSpace(answer)); a != "y" && a != "yes" {
		return withCode(ExitFailure, errors.New("not confirmed; nothing written"))
	}
	return nil
}
