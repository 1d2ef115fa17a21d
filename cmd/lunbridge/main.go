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
	"regexp"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"syscall"
	"text/tabwriter"

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

// atExit functions run after the command returns (metrics endpoint, ...).
var atExit []func()

// register adds a command to the application; called from each command
// file's init.
func register(category string, c *cli.Command) {
	c.Category = category
	commands = append(commands, c)
}

func newApp() *cli.App {
	sort.SliceStable(commands, func(i, j int) bool { return commands[i].Name < commands[j].Name })
	for _, c := range commands {
		if c.OnUsageError == nil {
			c.OnUsageError = onUsageError
		}
	}
	app := &cli.App{
		Name:      "lunbridge",
		Version:   versionInfo().Version,
		Usage:     "userspace iSCSI initiator: find, copy and expose remote LUNs",
		UsageText: "lunbridge [global options] command [command options] [arguments...]",
		Description: `lunbridge logs in to iSCSI targets from userspace (no iscsi_tcp, no iscsid,
no root needed except for attach) and works on their LUNs.

A LUN is named by a libiscsi-style URL; a portal alone names a target server:
   iscsi://[user[%secret]@]host[:port]/target-iqn/lun[?header_digest=crc32c&target_user=...]
   host[:port]                      (port 3260 when omitted, IPv6 as [::1]:3260)

Secrets: give them in LUNBRIDGE_CHAP_SECRET or --chap-secret-file (mode 0600),
not in the URL (a URL is visible to every user of the machine). lunbridge
removes LUNBRIDGE_*_SECRET from its environment at start: no child inherits it.

Exit codes: 0 ok, 1 other failure, 2 usage (flags, arguments, URL), 3 connection,
4 login or authentication, 5 SCSI error (including a LUN that does not exist),
6 verify found differences, 130 interrupted.

Examples:
   lunbridge discover 127.0.0.1                   # which targets does this server have?
   lunbridge ls 127.0.0.1                         # ... and which LUNs, how big?
   lunbridge info iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1
   lunbridge pull iscsi://127.0.0.1/iqn.2026-11.org.lunbridge:demo/1 disk.img
   lunbridge status                               # which serve/attach/mount run here?
   lunbridge completion bash > /etc/bash_completion.d/lunbridge

Run lunbridge COMMAND --help for a command's usage, options and examples.`,
		Flags:                globalFlags(),
		Commands:             commands,
		EnableBashCompletion: true,
		Suggest:              true,
		Before: func(c *cli.Context) error {
			if err := applyConfigFile(c); err != nil {
				return err
			}
			switch n := c.Int("procs"); {
			case n < 0:
				return usageErrorf("--procs %d: want 0 (all CPUs) or more", n)
			case n > 0:
				runtime.GOMAXPROCS(n)
			case !c.IsSet("procs") && os.Getenv("GOMAXPROCS") == "" && ioLoopCommand(c.Args().First()):
				runtime.GOMAXPROCS(ioLoopProcs(runtime.NumCPU()))
			}
			return setupLogging(c)
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				msg := fmt.Sprintf("unknown command %q", c.Args().First())
				if cli.SuggestCommand != nil {
					if s := cli.SuggestCommand(c.App.Commands, c.Args().First()); s != "" {
						msg += "; " + strings.ToLower(s[:1]) + s[1:]
					}
				}
				return usageErrorf("%s (see lunbridge --help)", msg)
			}
			return cli.ShowAppHelp(c)
		},
		OnUsageError:   onUsageError,
		ExitErrHandler: func(c *cli.Context, err error) {},
		Metadata:       map[string]any{"commandList": commandList(commands)},
	}
	// Categories in the order a user needs them (urfave/cli sorts them
	// alphabetically).
	app.CustomAppHelpTemplate = strings.Replace(cli.AppHelpTemplate,
		`COMMANDS:{{template "visibleCommandCategoryTemplate" .}}`, `COMMANDS:{{index .Metadata "commandList"}}`, 1)
	return app
}

// commandList renders the COMMANDS section of `lunbridge --help`, grouped
// by job in categoryOrder.
func commandList(cmds []*cli.Command) string {
	var b strings.Builder
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	for _, cat := range []string{catFind, catCopy, catExpose, catTest, ""} {
		title := cat
		if cat == "" {
			title = "Other"
		}
		first := true
		for _, c := range cmds {
			if c.Category != cat || c.Hidden {
				continue
			}
			if first {
				fmt.Fprintf(w, "\n   %s:", title)
				first = false
			}
			fmt.Fprintf(w, "\n     %s\t%s", strings.Join(c.Names(), ", "), c.Usage)
		}
		if cat == "" {
			fmt.Fprintf(w, "\n     help, h\tshow the commands, or one command's usage, options and examples")
		}
	}
	w.Flush()
	return b.String()
}

// onUsageError turns flag parse errors into one line and exit code 2.
func onUsageError(c *cli.Context, err error, isSubcommand bool) error {
	where := "lunbridge"
	if c.Command != nil && c.Command.Name != "" && c.Command.Name != c.App.Name {
		where += " " + c.Command.Name
	}
	return usageErrorf("%s (see %s --help)", suggestFlag(err.Error(), c), where)
}

func main() {
	// Before anything else: no secret stays in the environment children
	// inherit (secrets.go).
	takeSecretEnv()
	if err := receiveSecrets(); err != nil {
		fmt.Fprintf(os.Stderr, "lunbridge: %v\n", err)
		os.Exit(ExitFailure)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	app := newApp()
	if p := os.Getenv("LUNBRIDGE_CPUPROFILE"); p != "" {
		// For performance work: LUNBRIDGE_CPUPROFILE=cpu.out lunbridge bench ...
		if f, err := os.Create(p); err == nil {
			pprof.StartCPUProfile(f)
			atExit = append(atExit, func() { pprof.StopCPUProfile(); f.Close() })
		}
	}
	if p := os.Getenv("LUNBRIDGE_MEMPROFILE"); p != "" {
		// For performance work: the allocations of the whole run, by site.
		runtime.MemProfileRate = 4096
		atExit = append(atExit, func() {
			if f, err := os.Create(p); err == nil {
				pprof.Lookup("allocs").WriteTo(f, 0)
				f.Close()
			}
		})
	}
	err := app.RunContext(ctx, placeFlags(app, os.Args)) // args.go: flags anywhere
	for i := len(atExit) - 1; i >= 0; i-- {
		atExit[i]()
	}
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
	fmt.Fprintf(os.Stderr, "lunbridge: %s\n", humanize(err.Error()))
	return code
}

// packagePrefix matches the Go package names our libraries put in front of
// their errors: useful in a library, noise on a terminal.
var packagePrefix = regexp.MustCompile(`(^|: )(blockcopy|blockdev|fusefs|nbd|iscsi pdu): `)

// humanize removes package prefixes from a message shown to a person.
func humanize(msg string) string { return packagePrefix.ReplaceAllString(msg, "$1") }

func setupLogging(c *cli.Context) error {
	lvl, err := logrus.ParseLevel(c.String("log-level"))
	if err != nil {
		return usageErrorf("--log-level %q: want error, warning, info, debug or trace", c.String("log-level"))
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

// ioLoopCommand: the commands whose work is an I/O loop between two peers
// (the NBD client or the kernel, and the target), each step a hand-off
// between a few goroutines. With fewer Ps those hand-offs stay on one
// thread instead of waking another: on 2 CPUs, one P cut CPU per 4k I/O
// from ~15 to ~12 µs (bench) and from ~12 to ~8-10 µs (serve), which
// leaves more CPU to the client and, on a shared host, the target. Copies
// (pull, push, resync) and FUSE mounts parallelize and keep every CPU.
func ioLoopCommand(name string) bool {
	switch name {
	case "serve", "attach", "bench":
		return true
	}
	return false
}

// ioLoopProcs is the default GOMAXPROCS of an I/O-loop command: half the
// CPUs, at least one.
func ioLoopProcs(cpus int) int { return max(1, cpus/2) }
