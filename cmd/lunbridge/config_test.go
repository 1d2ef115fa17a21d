package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/blockdev/blockdevtest"
	"github.com/lunbridge/lunbridge/internal/testrig/faketarget"
)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// initiatorNames returns the InitiatorName of every login the fake target saw.
func initiatorNames(tg *faketarget.Target) []string {
	var out []string
	for _, c := range tg.Conns() {
		for _, l := range c.Logins() {
			for _, kv := range l.Keys {
				if kv.Key == "InitiatorName" {
					out = append(out, kv.Value)
				}
			}
		}
	}
	return out
}

func TestConfigFile(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "disc.secret", "disc-secret-123\n")
	cfgPath := writeFile(t, dir, "lunbridge.conf", `# lunbridge defaults
initiator-name = iqn.2026-11.org.example:from-config
timeout = "5s"
log-level = 'warning'   
discovery-chap-user = disc
discovery-chap-secret-file = disc.secret   # relative to this file
`)
	tg, addr := fakePortal(t, faketarget.Config{CHAPUser: "disc", CHAPSecret: "disc-secret-123"})
	r := lbRun(t, 20*time.Second, nil, "--config", cfgPath, "discover", addr)
	r.mustOK(t, "discover with --config")
	r = lbRun(t, 20*time.Second, []string{"LUNBRIDGE_CONFIG=" + cfgPath}, "--initiator-name", "iqn.2026-11.org.example:from-flag", "discover", addr)
	r.mustOK(t, "discover with LUNBRIDGE_CONFIG and a flag")
	names := initiatorNames(tg)
	if len(names) < 2 || names[0] != "iqn.2026-11.org.example:from-config" || names[len(names)-1] != "iqn.2026-11.org.example:from-flag" {
		t.Errorf("initiator names seen by the target: %v (want the file's, then the flag's)", names)
	}

	for _, c := range []struct{ content, want string }{
		{"chap-secret = hunter2hunter2\n", "chap-secret-file"},
		{"target-chap-secret=x\n", "secrets are not accepted"},
		{"initiator-nam = x\n", "unknown key"},
		{"timeout = soon\n", "timeout"},
		{"just words\n", "key = value"},
		{"timeout = 1s\ntimeout = 2s\n", "already set"},
	} {
		p := writeFile(t, dir, "bad.conf", c.content)
		r := lbRun(t, 20*time.Second, nil, "--config", p, "discover", addr)
		checkOneLineError(t, r, ExitUsage, "config "+strings.TrimSpace(c.content))
		if !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "bad.conf:") {
			t.Errorf("config %q: %s", c.content, r.stderr)
		}
		if strings.Contains(r.stderr, "hunter2") {
			t.Errorf("config error echoes the secret: %s", r.stderr)
		}
	}
	r = lbRun(t, 20*time.Second, nil, "--config", filepath.Join(dir, "missing.conf"), "discover", addr)
	checkOneLineError(t, r, ExitUsage, "missing config")
}

// TestCLILogSecretsNeverLogged runs CHAP logins (session with mutual CHAP, and
// discovery) at trace level and checks that neither secret nor any CHAP_R
// or CHAP_C value on the wire appears in the log.
func TestCLILogSecretsNeverLogged(t *testing.T) {
	const user, secret, tuser, tsecret = "logger", "session-secret-123", "tgt", "target-secret-456"
	tg, addr := fakePortal(t, faketarget.Config{CHAPUser: user, CHAPSecret: secret, TargetCHAPUser: tuser, TargetCHAPSecret: tsecret,
		LUNs: []faketarget.LUNConfig{{Number: 0}}})
	dir := t.TempDir()
	tfile := writeFile(t, dir, "t.secret", tsecret)
	url := "iscsi://" + addr + "/" + faketarget.DefaultTargetName + "/0"
	var logs strings.Builder
	for _, format := range []string{"text", "json"} {
		r := lbRun(t, 20*time.Second, []string{"LUNBRIDGE_CHAP_SECRET=" + secret}, "--log-level", "trace", "--log-format", format,
			"--chap-user", user, "--target-chap-user", tuser, "--target-chap-secret-file", tfile, "info", url)
		if r.code != 0 {
			t.Fatalf("info at trace: exit %d\n%s", r.code, r.stderr)
		}
		logs.WriteString(r.stderr)
		r = lbRun(t, 20*time.Second, []string{"LUNBRIDGE_DISCOVERY_CHAP_SECRET=" + secret}, "--log-level", "trace", "--log-format", format,
			"discover", "--discovery-chap-user", user, addr)
		if r.code != 0 {
			t.Fatalf("discover at trace: exit %d\n%s", r.code, r.stderr)
		}
		logs.WriteString(r.stderr)
	}
	log := logs.String()
	for _, want := range []string{"login", "AuthMethod", "MaxRecvDataSegmentLength", "->", "<-"} {
		if !strings.Contains(log, want) {
			t.Errorf("trace log lacks %q (login steps, negotiated values, PDU summaries)", want)
		}
	}
	forbidden := []string{secret, tsecret, hex.EncodeToString([]byte(secret)), hex.EncodeToString([]byte(tsecret))}
	for _, c := range tg.Conns() {
		for _, l := range c.Logins() {
			for _, kv := range l.Keys {
				if kv.Key == "CHAP_R" || kv.Key == "CHAP_C" {
					forbidden = append(forbidden, kv.Value, strings.TrimPrefix(strings.ToLower(kv.Value), "0x"))
				}
			}
		}
	}
	if len(forbidden) < 6 {
		t.Fatalf("the target saw no CHAP exchange")
	}
	for _, f := range forbidden {
		if f != "" && strings.Contains(strings.ToLower(log), strings.ToLower(f)) {
			t.Errorf("log contains a secret or CHAP value %q", f)
		}
	}

	// A secret in the URL works, is warned about, and is not echoed.
	r := lbRun(t, 20*time.Second, nil, "--target-chap-user", tuser, "--target-chap-secret-file", tfile,
		"info", "iscsi://"+user+"%"+secret+"@"+addr+"/"+faketarget.DefaultTargetName+"/0")
	if r.code != 0 || !strings.Contains(r.stderr, "visible to every user") || strings.Contains(r.stderr+r.stdout, secret) {
		t.Errorf("secret in URL: exit %d\nstderr: %s\nstdout: %s", r.code, r.stderr, r.stdout)
	}
}

func TestHelpEveryCommand(t *testing.T) {
	app := newApp()
	if len(app.Commands) < 10 {
		t.Fatalf("only %d commands registered", len(app.Commands))
	}
	for _, c := range app.Commands {
		if c.Name == "help" || c.Hidden { // hidden: man-pages, for make man
			continue
		}
		if c.Usage == "" || c.UsageText == "" || !strings.Contains(c.Description, "Examples:") {
			t.Errorf("command %s: needs Usage, UsageText and an Examples: section in Description", c.Name)
		}
		if !strings.HasPrefix(c.UsageText, "lunbridge "+c.Name) {
			t.Errorf("command %s: UsageText %q should start with \"lunbridge %s\"", c.Name, c.UsageText, c.Name)
		}
		if strings.HasSuffix(c.Usage, ".") || c.Usage != strings.TrimSpace(c.Usage) {
			t.Errorf("command %s: Usage %q: one line, no final period", c.Name, c.Usage)
		}
		if c.Category != "" && c.Category != catFind && c.Category != catCopy && c.Category != catExpose && c.Category != catTest {
			t.Errorf("command %s: unknown category %q", c.Name, c.Category)
		}
	}
	r := lbRun(t, 20*time.Second, nil, "--help")
	r.mustOK(t, "--help")
	last := -1
	for _, cat := range []string{"   Find:", "   Copy:", "   Expose:", "   Measure:"} {
		i := strings.Index(r.stdout, cat)
		if i < 0 || i < last {
			t.Errorf("--help: category %q missing or out of order:\n%s", cat, r.stdout)
		}
		last = i
	}
	for _, name := range []string{"discover", "ls", "info"} {
		r := lbRun(t, 20*time.Second, nil, name, "--help")
		r.mustOK(t, name+" --help")
		if !strings.Contains(r.stdout, "Examples:") || !strings.Contains(r.stdout, "lunbridge "+name) {
			t.Errorf("%s --help:\n%s", name, r.stdout)
		}
	}
	for _, sh := range []string{"bash", "zsh"} {
		r := lbRun(t, 20*time.Second, nil, "completion", sh)
		r.mustOK(t, "completion "+sh)
		if !strings.Contains(r.stdout, "--generate-bash-completion") || !strings.Contains(r.stdout, "lunbridge") {
			t.Errorf("completion %s:\n%s", sh, r.stdout)
		}
	}
	r = lbRun(t, 20*time.Second, nil, "completion", "fish")
	r.mustOK(t, "completion fish")
	if !strings.Contains(r.stdout, "complete -c lunbridge") {
		t.Errorf("completion fish:\n%s", r.stdout)
	}
	r = lbRun(t, 20*time.Second, nil, "completion", "tcsh")
	checkOneLineError(t, r, ExitUsage, "completion tcsh")
	r = lbRun(t, 20*time.Second, nil, "--generate-bash-completion")
	if !strings.Contains(r.stdout, "discover\n") || !strings.Contains(r.stdout, "ls\n") {
		t.Errorf("bash completion candidates:\n%s", r.stdout)
	}
}

// minimalDev implements only blockdev.Device.
type minimalDev struct{ blockdev.Device }

func TestMetricsEndpointAndDecorator(t *testing.T) {
	var scraped string
	var devFull, devMin blockdev.Device
	app := &cli.App{
		Flags: []cli.Flag{metricsFlag()},
		Action: func(c *cli.Context) error {
			stop, err := startMetrics(c)
			if err != nil {
				return err
			}
			defer stop()
			mem := blockdevtest.NewMem(1<<20, 512)
			devFull = instrumentDevice(mem, "iscsi://127.0.0.1:3260/iqn.x:y/1", nil)
			devMin = instrumentDevice(minimalDev{mem}, "min", nil)
			ctx := context.Background()
			buf := make([]byte, 4096)
			for i := 0; i < 5; i++ {
				if err := devFull.ReadAt(ctx, buf, 0); err != nil {
					return err
				}
			}
			if err := devFull.WriteAt(ctx, buf, 8192, false); err != nil {
				return err
			}
			_ = devFull.ReadAt(ctx, buf, 1<<30) // out of range: an error
			if err := devFull.(blockdev.Trimmer).Trim(ctx, 0, 4096); err != nil {
				return err
			}
			// A LUN-like device keeps the non-blocking path through the
			// wrapper, and its I/O is counted too.
			devAsync := instrumentDevice(lunLike{&blockdevtest.Async{Mem: mem}}, "async", nil)
			a, ok := devAsync.(blockdev.AsyncIO)
			if !ok {
				return fmt.Errorf("instrumented async device lost AsyncIO (%T)", devAsync)
			}
			ch := make(chan error, 1)
			a.StartReadAt(buf, 0, func(err error) { ch <- err })
			if err := <-ch; err != nil {
				return err
			}
			// So does a mirror (Trim and WriteZeroes, no Extents).
			devMirror := instrumentDevice(mirrorLike{blockdev.Device(mem), &blockdevtest.Async{Mem: mem}}, "mirror", nil)
			if _, ok := devMirror.(blockdev.AsyncIO); !ok {
				return fmt.Errorf("instrumented mirror lost AsyncIO (%T)", devMirror)
			}
			_, tr := devMirror.(blockdev.Trimmer)
			_, z := devMirror.(blockdev.Zeroer)
			_, e := devMirror.(blockdev.Extenter)
			_, r := devMirror.(blockdev.ReadOnlyer)
			if !tr || !z || e || r {
				return fmt.Errorf("instrumented mirror: Trimmer %v Zeroer %v Extenter %v ReadOnlyer %v", tr, z, e, r)
			}
			resp, err := http.Get("http://" + c.String("metrics-listen") + "/metrics")
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			scraped = string(b)
			return err
		},
	}
	addr := freeLoopbackAddr(t)
	if err := app.Run([]string{"x", "--metrics-listen", addr}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`lunbridge_device_commands_total{device="iscsi://127.0.0.1:3260/iqn.x:y/1",op="read"} 6`,
		`lunbridge_device_errors_total{device="iscsi://127.0.0.1:3260/iqn.x:y/1",op="read"} 1`,
		`lunbridge_device_bytes_total{device="iscsi://127.0.0.1:3260/iqn.x:y/1",op="read"} 20480`,
		`lunbridge_device_bytes_total{device="iscsi://127.0.0.1:3260/iqn.x:y/1",op="write"} 4096`,
		`lunbridge_device_commands_total{device="iscsi://127.0.0.1:3260/iqn.x:y/1",op="trim"} 1`,
		`lunbridge_device_latency_seconds_count{device="iscsi://127.0.0.1:3260/iqn.x:y/1",op="read"} 6`,
		`lunbridge_device_size_bytes{device="min"} 1.048576e+06`,
		`lunbridge_device_bytes_total{device="async",op="read"} 4096`,
		`lunbridge_device_inflight{device="iscsi://127.0.0.1:3260/iqn.x:y/1"} 0`,
		"go_goroutines",
	} {
		if !strings.Contains(scraped, want) {
			t.Errorf("scrape lacks %q", want)
		}
	}
	if t.Failed() {
		t.Logf("scraped:\n%s", scraped)
	}
	// The decorator keeps exactly the optional interfaces of what it wraps.
	for _, d := range []struct {
		dev  blockdev.Device
		full bool
	}{{devFull, true}, {devMin, false}} {
		_, r := d.dev.(blockdev.ReadOnlyer)
		_, tr := d.dev.(blockdev.Trimmer)
		_, z := d.dev.(blockdev.Zeroer)
		_, e := d.dev.(blockdev.Extenter)
		if r != d.full || tr != d.full || z != d.full || e != d.full {
			t.Errorf("full=%v: ReadOnlyer %v Trimmer %v Zeroer %v Extenter %v", d.full, r, tr, z, e)
		}
	}
	// Without --metrics-listen nothing is wrapped.
	mem := blockdevtest.NewMem(1<<20, 512)
	if instrumentDevice(mem, "x", nil) != blockdev.Device(mem) {
		t.Error("instrumentDevice wrapped a device with metrics off")
	}
}

func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// lunLike has every optional interface a LUN has, the non-blocking path
// included.
type lunLike struct{ *blockdevtest.Async }

func (lunLike) Identity() blockdev.Identity { return blockdev.Identity{WWID: "naa.test"} }

// mirrorLike has the optional interfaces of a mirror: Trim, WriteZeroes and
// the non-blocking path, nothing else.
type mirrorLike struct {
	blockdev.Device
	a *blockdevtest.Async
}

func (m mirrorLike) Trim(ctx context.Context, off, n int64) error {
	return m.a.Mem.Trim(ctx, off, n)
}

func (m mirrorLike) WriteZeroes(ctx context.Context, off, n int64, mayTrim bool) error {
	return m.a.Mem.WriteZeroes(ctx, off, n, mayTrim)
}

func (m mirrorLike) StartReadAt(p []byte, off int64, done func(error)) { m.a.StartReadAt(p, off, done) }

func (m mirrorLike) StartWriteAt(p []byte, off int64, fua bool, done func(error)) {
	m.a.StartWriteAt(p, off, fua, done)
}
