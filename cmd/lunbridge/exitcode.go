package main

import (
	"errors"
	"fmt"

	"github.com/urfave/cli/v2"
)

// Exit codes. They are part of the scripting contract (README, "Exit codes").
const (
	ExitOK          = 0   // success
	ExitFailure     = 1   // any other failure
	ExitUsage       = 2   // bad flags, arguments or URL
	ExitConnect     = 3   // portal unreachable, connection lost
	ExitLogin       = 4   // login refused: authentication, unknown target, ...
	ExitSCSI        = 5   // the target answered a command with an error (sense data)
	ExitMismatch    = 6   // verify found differences
	ExitInterrupted = 130 // SIGINT/SIGTERM
)

// codedError carries an exit code through the error chain.
type codedError struct {
	code int
	err  error
}

func (e *codedError) Error() string { return e.err.Error() }
func (e *codedError) Unwrap() error { return e.err }

func withCode(code int, err error) error {
	if err == nil {
		return nil
	}
	return &codedError{code: code, err: err}
}

func usageErrorf(format string, args ...any) error {
	return withCode(ExitUsage, fmt.Errorf(format, args...))
}

// exitClassifiers map library errors to exit codes; packages composed by the
// CLI add theirs from their command files.
var exitClassifiers []func(error) (int, bool)

func exitCode(err error) int {
	var ce *codedError
	if errors.As(err, &ce) {
		return ce.code
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		return ec.ExitCode()
	}
	for _, f := range exitClassifiers {
		if code, ok := f(err); ok {
			return code
		}
	}
	return ExitFailure
}
