// Command lunbridge attaches remote iSCSI LUNs from userspace: it finds
// targets, copies LUNs to and from files, and exposes a LUN locally as an NBD
// export, a kernel /dev/nbdX or a FUSE-mounted image file.
//
// This is the only package that composes the others. Each command lives in
// its own file and registers itself with register().
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"
)

// Command categories, shown by `lunbridge --help` in this order.
const (
	catFind   = "Find"
	catCopy   = "Copy"
	catExpose = "Expose"
	catTest   = "Measure"
)

var commands []*cli.Command

// register adds a command to the application; called from each command
// file's init.
func register(category string, c *cli.Command) {
	c.Category = category
	commands = append(commands, c)
}

func newApp() *cli.App {
	sort.SliceStable(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	app := &cli.App{
		Name:  "lunbridge",
		Usage: "userspace iSCSI initiator: find, copy and expose remote LUNs",
		Description: `lunbridge logs in to iSCSI targets from userspace (no iscsi_tcp, no iscsid).

A LUN is named by a libiscsi-style URL:
   iscsi://[user[%secret]@]host[:port]/target-iqn/lun

Secrets: prefer LUNBRIDGE_CHAP_SECRET / --chap-secret-file over a secret in the URL.

Examples:
   lunbridge info iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1
   lunbridge bench --rw randread --bs 4k --qd 32 iscsi://127.0.0.1:3260/iqn.2026-11.org.lunbridge:demo/1`,
		Flags:                globalFlags(),
		Commands:             commands,
		EnableBashCompletion: true,
		Before: func(c *cli.Context) error {
			return setupLogging(c)
		},
		ExitErrHandler: func(c *cli.Context, err error) {},
	}
	return app
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp()
	err := app.RunContext(ctx, os.Args)
	os.Exit(reportError(err, ctx))
}

// reportError prints err as one line on stderr and returns the exit code.
func reportError(err error, ctx context.Context) int {
	if err == nil {
		return ExitOK
	}
	code := exitCode(err)
	if ctx.Err() != nil && (errors.Is(err, context.Canceled) || code == ExitFailure) {
		code = ExitInterrupted
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) && ec.Error() == "" {
		return ec.ExitCode()
	}
	fmt.Fprintf(os.Stderr, "lunbridge: %v\n", err)
	return code
}

func setupLogging(c *cli.Context) error {
	lvl, err := logrus.ParseLevel(c.String("log-level"))
	if err != nil {
		return usageErrorf("--log-level: %v", err)
	}
	logrus.SetLevel(lvl)
	logrus.SetOutput(os.Stderr)
	switch c.String("log-format") {
	case "text":
		logrus.SetFormatter(&logrus.TextFormatter{DisableTimestamp: false, FullTimestamp: true})
	case "json":
		logrus.SetFormatter(&logrus.JSONFormatter{})
	default:
		return usageErrorf("--log-format must be text or json, not %q", c.String("log-format"))
	}
	return nil
}
