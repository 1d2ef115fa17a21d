package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sirupsen/logrus"
	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/initiator/scsi"
)

func init() {
	openISCSI = openLUN
	exitClassifiers = append(exitClassifiers, func(err error) (int, bool) {
		var le *initiator.LoginError
		var ce *initiator.ConnError
		var se *scsi.SenseError
		switch {
		case errors.Is(err, discovery.ErrBadURL):
			return ExitUsage, true
		case errors.As(err, &le), errors.Is(err, initiator.ErrAuth):
			return ExitLogin, true
		case errors.As(err, &ce), errors.Is(err, blockdev.ErrUnavailable):
			// ErrUnavailable: the session (or every path) lost past the
			// replacement timeout, a connection failure too (README).
			return ExitConnect, true
		case errors.As(err, &se):
			return ExitSCSI, true
		case errors.Is(err, blockdev.ErrReadOnly), errors.Is(err, blockdev.ErrOutOfRange):
			return ExitSCSI, true
		}
		return 0, false
	})
}

// defaultInitiatorName is open-iscsi's name when the host has one, else a
// stable name derived from the host name.
func defaultInitiatorName() string {
	if b, err := os.ReadFile("/etc/iscsi/initiatorname.iscsi"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "InitiatorName="); ok && v != "" {
				return v
			}
		}
	}
	h, err := os.Hostname()
	if err != nil || h == "" {
		h = "localhost"
	}
	return "iqn.2026-11.org.lunbridge:" + strings.ToLower(h)
}

// readSecret takes a secret from an environment variable (moved out of the
// environment at start, see secrets.go) or a file (first line, trailing
// newline removed); never from argv. A file other users may read is
// warned about.
func readSecret(env, fileFlag string, c *cli.Context) (string, error) {
	if f := flagOrConfig(c, fileFlag); f != "" {
		return readSecretFile(f, fileFlag)
	}
	return secretFromEnv(env), nil
}

// readSecretFile reads a secret from the first line of file f (named by
// the flag or key fileFlag), warning when others may read it.
func readSecretFile(f, fileFlag string) (string, error) {
	b, err := os.ReadFile(f)
	if err != nil {
		return "", usageErrorf("--%s: %v", fileFlag, err)
	}
	if st, err := os.Stat(f); err == nil && st.Mode().Perm()&0o077 != 0 {
		logrus.Warnf("--%s %s: mode %v lets other users read or change the secret; chmod 600 it", fileFlag, f, st.Mode().Perm())
	}
	return strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r"), nil
}

// sessionConfig builds an initiator configuration from a URL and the
// global flags. Flags and environment override what the URL says.
func sessionConfig(c *cli.Context, u *discovery.URL) (initiator.Config, error) {
	// Each setting: the command line, else the config file's [target] or
	// [portal] section for u, else its top, else the default
	// (configsections.go).
	name := sessionString(c, u, "initiator-name")
	if name == "" {
		name = defaultInitiatorName()
	}
	var ints [4]int
	for i, k := range []string{"queue-depth", "connections", "", "erl"} {
		if k == "" {
			continue // max-recv-data-segment-length is a size (below)
		}
		v, err := sessionInt(c, u, k)
		if err != nil {
			return initiator.Config{}, err
		}
		ints[i] = v
	}
	mrdsl, err := sessionSize(c, u, "max-recv-data-segment-length")
	if err != nil {
		return initiator.Config{}, err
	}
	ints[2] = int(min(mrdsl, 1<<31-1))
	var durs [5]time.Duration
	for i, k := range []string{"timeout", "nop-interval", "nop-timeout", "command-timeout", "replacement-timeout"} {
		v, err := sessionDuration(c, u, k)
		if err != nil {
			return initiator.Config{}, err
		}
		durs[i] = v
	}
	if q := ints[0]; q < 1 || q > 4096 {
		return initiator.Config{}, usageErrorf("--queue-depth %d: want 1 to 4096 commands in flight", q)
	}
	if n := ints[1]; n < 1 || n > 64 {
		return initiator.Config{}, usageErrorf("--connections %d: want 1 to 64 TCP connections per session", n)
	}
	if n := ints[3]; n < 0 || n > 2 {
		return initiator.Config{}, usageErrorf("--erl %d: want an ErrorRecoveryLevel of 0, 1 or 2", n)
	}
	if d := durs[0]; d <= 0 {
		return initiator.Config{}, usageErrorf("--timeout %v: want a positive duration (how long to wait for connect and login)", d)
	}
	_, _, mrdslInSection := sessionSetting(u, "max-recv-data-segment-length")
	if m := ints[2]; (c.IsSet("max-recv-data-segment-length") || mrdslInSection) && (m < 512 || m > 1<<24-1) {
		return initiator.Config{}, usageErrorf("--max-recv-data-segment-length %d: want 512 to 16777215 (RFC 7143)", m)
	}
	cfg := initiator.Config{
		InitiatorName:            name,
		TargetName:               u.Target,
		Portal:                   u.Portal,
		HeaderDigest:             u.HeaderDigest,
		DataDigest:               u.DataDigest,
		MaxRecvDataSegmentLength: ints[2],
		QueueDepth:               ints[0],
		MaxConnections:           ints[1],
		ErrorRecoveryLevel:       ints[3],
		LoginTimeout:             durs[0],
		NopInterval:              durs[1],
		NopTimeout:               durs[2],
		CommandTimeout:           durs[3],
		ReplacementTimeout:       durs[4],
		Logger:                   logrus.NewEntry(logrus.StandardLogger()),
	}
	_, _, rtInSection := sessionSetting(u, "replacement-timeout")
	if (c.IsSet("replacement-timeout") || rtInSection) && cfg.ReplacementTimeout == 0 {
		cfg.NoRecovery = true
	}
	if t := legTimeout(); t > 0 {
		cfg.ReplacementTimeout = t
	}
	for _, d := range []struct {
		flag string
		dst  *[]string
	}{{"header-digest", &cfg.HeaderDigest}, {"data-digest", &cfg.DataDigest}} {
		if v := sessionString(c, u, d.flag); v != "" {
			var list []string
			for _, x := range strings.Split(v, ",") {
				switch strings.ToLower(strings.TrimSpace(x)) {
				case "none":
					list = append(list, "None")
				case "crc32c":
					list = append(list, "CRC32C")
				default:
					return cfg, usageErrorf("--%s: %q is not None or CRC32C", d.flag, x)
				}
			}
			*d.dst = list
		}
	}
	user := u.User
	if v := sessionString(c, u, "chap-user"); v != "" {
		user = v
	}
	secret, ok, err := sectionSecret(c, u, "chap")
	if err == nil && !ok {
		secret, err = readSecret("LUNBRIDGE_CHAP_SECRET", "chap-secret-file", c)
	}
	if err != nil {
		return cfg, err
	}
	if secret == "" {
		secret = u.Secret
	}
	tuser := u.TargetUser
	if v := sessionString(c, u, "target-chap-user"); v != "" {
		tuser = v
	}
	tsecret, ok, err := sectionSecret(c, u, "target-chap")
	if err == nil && !ok {
		tsecret, err = readSecret("LUNBRIDGE_TARGET_CHAP_SECRET", "target-chap-secret-file", c)
	}
	if err != nil {
		return cfg, err
	}
	if tsecret == "" {
		tsecret = u.TargetSecret
	}
	if u.HasEmbeddedSecret() {
		logrus.Warn("a CHAP secret in the URL is visible to every user of this machine (ps, shell history); use LUNBRIDGE_CHAP_SECRET or --chap-secret-file")
	}
	if user != "" || secret != "" {
		if user == "" || secret == "" {
			return cfg, usageErrorf("CHAP needs both a user (--chap-user or user@ in the URL) and a secret (LUNBRIDGE_CHAP_SECRET or --chap-secret-file)")
		}
		cfg.CHAP = &initiator.CHAP{User: user, Secret: secret, TargetUser: tuser, TargetSecret: tsecret, AllowShortSecret: c.Bool("allow-short-secret")}
		if (tuser != "") != (tsecret != "") && tsecret == "" {
			return cfg, usageErrorf("mutual CHAP needs the target's secret too (LUNBRIDGE_TARGET_CHAP_SECRET or --target-chap-secret-file)")
		}
	}
	if cfg.ISID, err = isidFor(c, u, name); err != nil { // isid.go
		return cfg, err
	}
	return cfg, nil
}

// dialURL parses a URL and logs in to its target.
func dialURL(c *cli.Context, raw string) (*discovery.URL, *initiator.Session, error) {
	raw = expandDevice(raw)
	u, err := discovery.ParseURL(raw)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := sessionConfig(c, u)
	if err != nil {
		return nil, nil, err
	}
	s, err := initiator.Dial(c.Context, cfg)
	if err != nil {
		var le *initiator.LoginError
		if errors.As(err, &le) && le.Class == 2 && (le.Detail == 3 || le.Detail == 4) {
			return nil, nil, fmt.Errorf("%s: %w (lunbridge discover %s lists its targets)", u, err, u.Portal)
		}
		return nil, nil, fmt.Errorf("%s: %w", u, authHint(err, cfg, "--chap-user and LUNBRIDGE_CHAP_SECRET or --chap-secret-file"))
	}
	return u, s, nil
}

// openLUN opens the LUN an iscsi:// URL names.
func openLUN(c *cli.Context, raw string, readOnly bool) (blockdev.Device, error) {
	l, err := openLUNHandle(c, raw)
	if err != nil {
		return nil, err
	}
	return l, nil
}

func openLUNHandle(c *cli.Context, raw string) (*initiator.LUN, error) {
	raw = expandDevice(raw)
	u, err := discovery.ParseURL(raw)
	if err != nil {
		return nil, err
	}
	if u.Target == "" || !u.HasLUN {
		return nil, usageErrorf("%s names no LUN: want iscsi://host[:port]/target-iqn/lun", u)
	}
	_, s, err := dialURL(c, raw)
	if err != nil {
		return nil, err
	}
	l, err := initiator.OpenLUN(c.Context, s, u.LUN)
	if err != nil {
		err = explainOpenError(c.Context, s, u, err)
		s.CloseContext(context.Background())
		return nil, fmt.Errorf("%s: %w", u, err)
	}
	l.SetOwnsSession(true)
	return l, nil
}

var discoveryParse = discovery.ParseURL

// explainOpenError turns "the LUN is not there" and "the LUN is not a
// disk" into one clear sentence naming the LUNs the target has, with exit
// code ExitSCSI.
func explainOpenError(ctx context.Context, s *initiator.Session, u *discovery.URL, err error) error {
	var se *scsi.SenseError
	missing := errors.Is(err, blockdev.ErrInvalid) ||
		(errors.As(err, &se) && se.Key == scsi.KeyIllegalRequest && se.ASC == 0x25) // LOGICAL UNIT NOT SUPPORTED
	notDisk := strings.Contains(err.Error(), "not a disk")
	if !missing && !notDisk {
		return err
	}
	var have []string
	if luns, lerr := initiator.ReportLUNs(ctx, s); lerr == nil {
		for _, n := range luns {
			desc := strconv.FormatUint(n, 10)
			if inq, ierr := initiator.Inquiry(ctx, s, n); ierr == nil && inq.DeviceType != 0 {
				desc += " (" + inq.DeviceType.String() + ")"
			}
			have = append(have, desc)
		}
	}
	list := ""
	if len(have) > 0 {
		list = "; its LUNs: " + strings.Join(have, ", ")
	}
	if missing {
		return withCode(ExitSCSI, fmt.Errorf("LUN %d does not exist on %s%s", u.LUN, u.Target, list))
	}
	return withCode(ExitSCSI, fmt.Errorf("%w%s", err, list))
}

// authHint adds what to do to an authentication failure.
func authHint(err error, cfg initiator.Config, how string) error {
	if !errors.Is(err, initiator.ErrAuth) {
		var ce *initiator.ConnError
		if errors.As(err, &ce) && !errors.Is(err, initiator.ErrNotTarget) &&
			(errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded)) {
			return fmt.Errorf("%w (--timeout sets how long to wait)", err)
		}
		return err
	}
	var le *initiator.LoginError
	if cfg.CHAP == nil && errors.As(err, &le) {
		return fmt.Errorf("%w (no CHAP credentials given; if the target needs CHAP, give %s)", err, how)
	}
	if cfg.CHAP != nil && errors.As(err, &le) {
		return fmt.Errorf("%w (check the CHAP user %q and its secret)", err, cfg.CHAP.User)
	}
	return err
}

func logrusInfo(format string, args ...any) { logrus.Infof(format, args...) }
