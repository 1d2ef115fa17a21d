package main

import (
	"time"

	"github.com/urfave/cli/v2"
)

func globalFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "warning", Usage: "panic|fatal|error|warning|info|debug|trace", EnvVars: []string{"LUNBRIDGE_LOG_LEVEL"}},
		&cli.StringFlag{Name: "log-format", Value: "text", Usage: "text|json"},
		&cli.StringFlag{Name: "initiator-name", Usage: "initiator IQN (default: /etc/iscsi/initiatorname.iscsi, else iqn.2026-11.org.lunbridge:<hostname>)", EnvVars: []string{"LUNBRIDGE_INITIATOR_NAME"}},
		&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "connect and login timeout"},
		&cli.StringFlag{Name: "chap-user", Usage: "CHAP user name (overrides the URL's)", EnvVars: []string{"LUNBRIDGE_CHAP_USER"}},
		&cli.StringFlag{Name: "chap-secret-file", Usage: "read the CHAP secret from this file (or set LUNBRIDGE_CHAP_SECRET)"},
		&cli.StringFlag{Name: "target-chap-user", Usage: "mutual CHAP: the user name the target must present", EnvVars: []string{"LUNBRIDGE_TARGET_CHAP_USER"}},
		&cli.StringFlag{Name: "target-chap-secret-file", Usage: "mutual CHAP: read the target's secret from this file (or set LUNBRIDGE_TARGET_CHAP_SECRET)"},
		&cli.BoolFlag{Name: "allow-short-secret", Usage: "accept CHAP secrets shorter than 12 bytes"},
		&cli.StringFlag{Name: "header-digest", Usage: "None|CRC32C|\"CRC32C,None\" (offer order)"},
		&cli.StringFlag{Name: "data-digest", Usage: "None|CRC32C|\"CRC32C,None\" (offer order)"},
		&cli.IntFlag{Name: "max-recv-data-segment-length", Usage: "bytes the initiator accepts per PDU (default 262144)"},
		&cli.IntFlag{Name: "queue-depth", Value: 128, Usage: "commands in flight per session"},
	}
}
