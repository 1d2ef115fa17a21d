package main

import (
	"time"

	"github.com/urfave/cli/v2"
)

// globalFlags are accepted before or after the command name (args.go). Every one of them can
// also be set in the --config file under its own name (secrets excepted:
// only *-secret-file paths).
func globalFlags() []cli.Flag {
	return []cli.Flag{
		configFlag(),
		&cli.StringFlag{Name: "log-level", Value: "warning", Usage: "how much to log on stderr: error, warning, info, debug (login steps and negotiated values) or trace (every PDU)", EnvVars: []string{"LUNBRIDGE_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "log line format: text or json", EnvVars: []string{"LUNBRIDGE_LOG_FORMAT"}},
		&cli.StringFlag{Name: "initiator-name", Usage: "initiator `IQN` (default: InitiatorName from /etc/iscsi/initiatorname.iscsi, else iqn.2026-11.org.lunbridge:<hostname>)", EnvVars: []string{"LUNBRIDGE_INITIATOR_NAME"}},
		&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up connecting and logging in after `DURATION`", EnvVars: []string{"LUNBRIDGE_TIMEOUT"}},
		&cli.StringFlag{Name: "chap-user", Usage: "CHAP user `NAME` (overrides the user@ of the URL)", EnvVars: []string{"LUNBRIDGE_CHAP_USER"}},
		&cli.StringFlag{Name: "chap-secret-file", Usage: "read the CHAP secret from `FILE` (or set LUNBRIDGE_CHAP_SECRET)", TakesFile: true},
		&cli.StringFlag{Name: "target-chap-user", Usage: "mutual CHAP: the user `NAME` the target must answer with", EnvVars: []string{"LUNBRIDGE_TARGET_CHAP_USER"}},
		&cli.StringFlag{Name: "target-chap-secret-file", Usage: "mutual CHAP: read the target's secret from `FILE` (or set LUNBRIDGE_TARGET_CHAP_SECRET)", TakesFile: true},
		&cli.BoolFlag{Name: "allow-short-secret", Usage: "accept CHAP secrets shorter than 12 bytes (RFC 7143 asks for 12 or more)"},
		&cli.StringFlag{Name: "header-digest", Usage: "header digests to offer, in order: None, CRC32C, \"CRC32C,None\" or \"None,CRC32C\"", DefaultText: "None"},
		&cli.StringFlag{Name: "data-digest", Usage: "data digests to offer, in order: None, CRC32C, \"CRC32C,None\" or \"None,CRC32C\"", DefaultText: "None"},
		&cli.StringFlag{Name: "max-recv-data-segment-length", Usage: "largest PDU data segment in `BYTES` the initiator accepts (512 to 16777215; e.g. 262144, 256k, 1M). The default lets a target send a 1 MiB read as one Data-In PDU instead of four (open-iscsi and libiscsi declare 262144): fewer sends and wake-ups for the target", DefaultText: "1048576"},
		&cli.IntFlag{Name: "queue-depth", Value: 128, Usage: "`N` commands in flight per session at most"},
		&cli.StringFlag{Name: "instance", Usage: "serve, attach, mount and push log in with an ISID derived from initiator name, target, portal and LUN, so a restarted process ends its predecessor's session; a second process on the same LUN needs its own instance `NAME`; also the name lunbridge status lists serve, attach and mount under", EnvVars: []string{"LUNBRIDGE_INSTANCE"}},
		&cli.StringFlag{Name: "isid", Usage: "initiator session ID as 12 hex `DIGITS` (one session only), or random (never reinstates an earlier process's session)"},
		&cli.IntFlag{Name: "connections", Value: 1, Usage: "open `N` TCP connections in each session (MC/S: MaxConnections, e.g. istgt allows 4)"},
		&cli.IntFlag{Name: "erl", Value: 0, Usage: "ErrorRecoveryLevel `N` to offer at login (0, 1 or 2; the session uses the lower of this and the target's). 1: a Data-In digest error or a lost status is re-requested with a SNACK on the same connection instead of recovering the whole session, and a command the target never received is retried with its CmdSN; 2 adds connection recovery: with --connections > 1 a lost connection is replaced inside the session and its commands moved to it (TASK REASSIGN), falling back to session recovery"},
		&cli.DurationFlag{Name: "nop-interval", Value: 5 * time.Second, Usage: "ping an idle connection (NOP-Out) every `DURATION` (-1s: never)"},
		&cli.DurationFlag{Name: "nop-timeout", Value: 5 * time.Second, Usage: "declare the connection dead when a ping is not answered within `DURATION`"},
		&cli.DurationFlag{Name: "command-timeout", Value: 30 * time.Second, Usage: "abort a SCSI command after `DURATION` (ABORT TASK, then LUN RESET, then reconnect; -1s: never)"},
		&cli.DurationFlag{Name: "replacement-timeout", Value: 120 * time.Second, Usage: "after a connection loss, keep I/O waiting for the session to come back at most `DURATION` (0: fail at once, -1s: forever)"},
		&cli.IntFlag{Name: "procs", Usage: "run Go code on at most `N` CPUs at once (GOMAXPROCS; 0: all). Default: all, except serve, attach and bench: half the CPUs (at least 1), which costs less CPU per I/O (fewer thread hand-offs)", EnvVars: []string{"LUNBRIDGE_PROCS"}},
		metricsFlag(),
	}
}
