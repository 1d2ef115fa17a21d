package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// The JSON of `lunbridge status` as a script sees it (decoded strictly:
// a renamed field fails the test).
type stSummary struct {
	Name          string    `json:"name"`
	Command       string    `json:"command"`
	PID           int       `json:"pid"`
	URLs          []string  `json:"urls"`
	Size          int64     `json:"size"`
	State         string    `json:"state"`
	Exposed       string    `json:"exposed"`
	ControlSocket string    `json:"control_socket"`
	Started       time.Time `json:"started"`
	Error         string    `json:"error"`
}

type stSession struct {
	Leg         string `json:"leg"`
	Path        *int   `json:"path"`
	Target      string `json:"target"`
	Portal      string `json:"portal"`
	ISID        string `json:"isid"`
	TSIH        uint16 `json:"tsih"`
	Connections int    `json:"connections"`
	Recovering  bool   `json:"recovering"`
	Reconnects  int64  `json:"reconnects"`
	Params      struct {
		HeaderDigest             string `json:"header_digest"`
		DataDigest               string `json:"data_digest"`
		MaxRecvDataSegmentLength int    `json:"max_recv_data_segment_length"`
		MaxXmitDataSegmentLength int    `json:"max_xmit_data_segment_length"`
		FirstBurstLength         int    `json:"first_burst_length"`
		MaxBurstLength           int    `json:"max_burst_length"`
		InitialR2T               bool   `json:"initial_r2t"`
		ImmediateData            bool   `json:"immediate_data"`
		MaxOutstandingR2T        int    `json:"max_outstanding_r2t"`
		MaxConnections           int    `json:"max_connections"`
		DataPDUInOrder           bool   `json:"data_pdu_in_order"`
		DataSequenceInOrder      bool   `json:"data_sequence_in_order"`
		DefaultTime2Wait         int    `json:"default_time2wait"`
		DefaultTime2Retain       int    `json:"default_time2retain"`
		ErrorRecoveryLevel       int    `json:"error_recovery_level"`
		TargetPortalGroupTag     int    `json:"target_portal_group_tag"`
		TargetAlias              string `json:"target_alias"`
	} `json:"params"`
}

type stDetail struct {
	stSummary
	BlockSize int         `json:"block_size"`
	ReadOnly  bool        `json:"read_only"`
	WWID      string      `json:"wwid"`
	Serial    string      `json:"serial"`
	Sessions  []stSession `json:"sessions"`
	Multipath *struct {
		Identity struct {
			WWID      string `json:"wwid"`
			Serial    string `json:"serial"`
			Size      int64  `json:"size"`
			BlockSize int    `json:"block_size"`
		} `json:"identity"`
		Policy string `json:"policy"`
		Paths  []struct {
			Index   int        `json:"index"`
			Portal  string     `json:"portal"`
			State   string     `json:"state"`
			Session *stSession `json:"session"`
		} `json:"paths"`
	} `json:"multipath"`
	Mirror *struct {
		State string `json:"state"`
		Legs  []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"legs"`
	} `json:"mirror"`
	NBD *struct {
		URI               string `json:"uri"`
		Socket            string `json:"socket"`
		Address           string `json:"address"`
		Export            string `json:"export"`
		Clients           int64  `json:"clients"`
		ConnectionsTotal  uint64 `json:"connections_total"`
		ProtocolErrors    uint64 `json:"protocol_errors"`
		RequestsCompleted uint64 `json:"requests_completed"`
	} `json:"nbd"`
	KernelDevice string `json:"kernel_device"`
	Mount        *struct {
		MountPoint string `json:"mount_point"`
		File       string `json:"file"`
	} `json:"mount"`
	IO *struct {
		Reads       int64 `json:"reads"`
		Writes      int64 `json:"writes"`
		ReadBytes   int64 `json:"read_bytes"`
		WriteBytes  int64 `json:"write_bytes"`
		Flushes     int64 `json:"flushes"`
		Trims       int64 `json:"trims"`
		WriteZeroes int64 `json:"write_zeroes"`
		Errors      int64 `json:"errors"`
	} `json:"io"`
}

// loose decoding for the nested documents the test does not spell out
// field by field (multipath paths, mirror legs carry more).
func decodeLoose(t *testing.T, s string, v any) {
	t.Helper()
	if err := json.Unmarshal([]byte(s), v); err != nil {
		t.Fatalf("%v in %s", err, s)
	}
}

// With three instances running — a plain serve, a multipath serve (two
// portals of one tgtd) and a mirror mount (legs on tgtd and istgt) —
// `lunbridge status` lists all three, and `status NAME --json` shows each
// one's sessions, paths, legs, NBD socket or mount point, and I/O. A
// killed instance drops out of the list and its name is taken again by
// its successor.
func TestStatusListsEveryInstance(t *testing.T) {
	requireFUSE(t)
	const size = 32 << 20
	tg := targets.StartWith(t, targets.KindTgtd, targets.Options{ExtraPortals: []string{"127.0.0.2"}},
		targets.Target{LUNs: []targets.LUN{{Size: size, Thin: true}, {Size: size, Thin: true}, {Size: size, Thin: true}}})
	ist := targets.StartIstgt(t, targets.Target{LUNs: []targets.LUN{{Size: size}}})
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	env := []string{"LUNBRIDGE_RUN_DIR=" + run, "XDG_RUNTIME_DIR=" + dir, "LUNBRIDGE_ISID_LOCK_DIR=" + filepath.Join(dir, "isid")}
	plainURL := tg.URL(0, 0)
	mpA := tg.URL(0, 1)
	mpB := strings.Replace(mpA, tg.Portal, tg.ExtraPortals[0], 1)
	legA, legB := tg.URL(0, 2), ist.URL(0, 0)
	if r := lbRun(t, 2*time.Minute, env, "mirror", "create", "--assume-clean", "--yes", legA, legB); r.code != 0 {
		t.Fatalf("mirror create: exit %d\n%s", r.code, r.stderr)
	}

	r := lbRun(t, 30*time.Second, env, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "no lunbridge serve, attach or mount is running") {
		t.Fatalf("status with nothing running: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = lbRun(t, 30*time.Second, env, "status", "--json")
	if r.code != 0 || strings.TrimSpace(r.stdout) != "[]" {
		t.Fatalf("status --json with nothing running: exit %d %q %s", r.code, r.stdout, r.stderr)
	}

	// Names: the target's last name part and the LUN.
	short := tg.Targets[0].Name[strings.LastIndex(tg.Targets[0].Name, ":")+1:]
	plainName := short + "-" + plainURL[strings.LastIndex(plainURL, "/")+1:]
	mpName := short + "-" + mpA[strings.LastIndex(mpA, "/")+1:]
	mirrorName := "mirror1" // the mount point's name
	mnt := filepath.Join(dir, mirrorName)
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}

	plain := startServe(t, env, "serve", "--persistent", plainURL)
	mp := startServe(t, env, "serve", "--persistent", "--path", mpB, mpA)
	mr := startServe(t, env, "mount", "--mirror", legB, legA, mnt)
	t.Cleanup(func() { // before startServe's kill: unmount
		mr.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-mr.exited:
		case <-time.After(30 * time.Second):
		}
	})
	if mr.line != filepath.Join(mnt, "disk.img") {
		t.Fatalf("mount printed %q", mr.line)
	}
	plainSock := filepath.Join(run, plainName, "nbd.sock")
	if !strings.Contains(plain.line, "socket="+plainSock) {
		t.Fatalf("plain serve without --listen: %q, want its socket %s", plain.line, plainSock)
	}
	nc := nbdHold(t, "unix", plainSock)
	defer nc.Close()
	if err := (&nbdWriter{c: nc}).write(make([]byte, 4096), 4096); err != nil {
		t.Fatal(err)
	}

	r = lbRun(t, 30*time.Second, env, "status")
	if r.code != 0 {
		t.Fatalf("status: exit %d\n%s", r.code, r.stderr)
	}
	rows := tableRows(t, r.stdout, "NAME", "COMMAND", "STATE", "SIZE", "PID", "EXPOSED", "URL")
	if len(rows) != 3 {
		t.Fatalf("status lists %d instances, want 3:\n%s", len(rows), r.stdout)
	}
	var list []stSummary
	r = lbRun(t, 30*time.Second, env, "status", "--json")
	decodeStrict(t, r.stdout, &list)
	want := map[string]struct {
		p    *serveProc
		urls []string
	}{
		plainName:  {plain, []string{plainURL}},
		mpName:     {mp, []string{mpA, mpB}},
		mirrorName: {mr, []string{legA, legB}},
	}
	for _, s := range list {
		w, ok := want[s.Name]
		if !ok {
			t.Fatalf("unexpected instance %+v (want %s, %s, %s)", s, plainName, mpName, mirrorName)
		}
		wantSize := s.Size == size
		if s.Name == mirrorName { // the mirror's metadata takes the last MiB
			wantSize = s.Size > size/2 && s.Size < size
		}
		wantCmd, wantExposed := "serve", strings.HasPrefix(s.Exposed, "nbd+unix:")
		if s.Name == mirrorName {
			wantCmd, wantExposed = "mount", s.Exposed == mr.line
		}
		if s.Command != wantCmd || s.PID != w.p.cmd.Process.Pid || !wantSize || s.State != "ok" ||
			strings.Join(s.URLs, " ") != strings.Join(w.urls, " ") || !wantExposed ||
			s.ControlSocket != filepath.Join(run, s.Name, "control.sock") || s.Started.IsZero() {
			t.Errorf("instance %s: %+v", s.Name, s)
		}
	}
	if len(list) != 3 {
		t.Fatalf("status --json: %d instances", len(list))
	}

	detail := func(name string) stDetail {
		t.Helper()
		r := lbRun(t, 30*time.Second, env, "status", "--json", name)
		if r.code != 0 {
			t.Fatalf("status --json %s: exit %d\n%s", name, r.code, r.stderr)
		}
		var d stDetail
		decodeLoose(t, r.stdout, &d)
		exposed := d.NBD != nil && d.NBD.Socket == filepath.Join(run, name, "nbd.sock")
		if name == mirrorName {
			exposed = d.NBD == nil && d.Mount != nil && d.Mount.MountPoint == mnt && d.Mount.File == mr.line
		}
		if d.Name != name || !exposed || d.IO == nil || d.BlockSize != 512 {
			t.Fatalf("status %s: %s", name, r.stdout)
		}
		for _, s := range d.Sessions {
			p := s.Params
			if len(s.ISID) != 12 || s.TSIH == 0 || s.Connections != 1 || s.Recovering || p.MaxRecvDataSegmentLength < 512 ||
				p.MaxXmitDataSegmentLength < 512 || p.MaxBurstLength < 512 || p.HeaderDigest != "None" || p.DataDigest != "None" ||
				p.ErrorRecoveryLevel != 0 || !strings.HasPrefix(s.Target, "iqn.") {
				t.Errorf("status %s: session %+v", name, s)
			}
		}
		return d
	}

	d := detail(plainName)
	if len(d.Sessions) != 1 || d.Sessions[0].Portal != tg.Portal || d.Sessions[0].Path != nil || d.Multipath != nil || d.Mirror != nil {
		t.Errorf("plain serve: %+v", d)
	}
	if d.NBD.Clients != 1 || d.IO.Writes != 1 || d.IO.WriteBytes != 4096 || d.WWID == "" {
		t.Errorf("plain serve: nbd %+v io %+v wwid %q", *d.NBD, *d.IO, d.WWID)
	}

	d = detail(mpName)
	if d.Multipath == nil || len(d.Multipath.Paths) != 2 || len(d.Sessions) != 2 || d.Multipath.Identity.Size != size {
		t.Fatalf("multipath serve: %+v", d)
	}
	for i, s := range d.Sessions {
		if s.Path == nil || *s.Path != i || s.Portal != []string{tg.Portal, tg.ExtraPortals[0]}[i] || d.Multipath.Paths[i].Session == nil {
			t.Errorf("multipath session %d: %+v", i, s)
		}
	}
	if d.Sessions[0].ISID == d.Sessions[1].ISID {
		t.Errorf("both paths log in with ISID %s", d.Sessions[0].ISID)
	}

	d = detail(mirrorName)
	if d.Mirror == nil || len(d.Mirror.Legs) != 2 || len(d.Sessions) != 2 ||
		d.Sessions[0].Leg != "A" || d.Sessions[0].Portal != tg.Portal || d.Sessions[1].Leg != "B" || d.Sessions[1].Portal != ist.Portal {
		t.Fatalf("mirror serve: %+v", d)
	}
	if d.Mirror.Legs[0].State != "in-sync" || d.Mirror.Legs[1].State != "in-sync" || d.Command != "mount" {
		t.Errorf("mirror mount: %s, legs %+v", d.Command, d.Mirror.Legs)
	}

	// The text view of one instance.
	r = lbRun(t, 30*time.Second, env, "status", mpName)
	for _, w := range []string{mpName + ": serve, pid", "LEG  PATH  PORTAL", tg.ExtraPortals[0], "policy=failover", "MRDSL/MXDSL", "size=33554432 block=512"} {
		if r.code != 0 || !strings.Contains(r.stdout, w) {
			t.Errorf("status %s lacks %q: exit %d\n%s%s", mpName, w, r.code, r.stdout, r.stderr)
		}
	}
	// mirror status finds the only running mirror by itself; --name
	// chooses one; an unknown name lists the running ones.
	r = lbRun(t, 30*time.Second, env, "mirror", "status")
	if r.code != 0 || !strings.Contains(r.stdout, "LEG") {
		t.Errorf("mirror status without a socket: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = lbRun(t, 30*time.Second, env, "mirror", "status", "--name", mpName)
	if r.code != ExitFailure || !strings.Contains(r.stderr, "runs no mirror") {
		t.Errorf("mirror status --name %s: exit %d\n%s", mpName, r.code, r.stderr)
	}
	r = lbRun(t, 30*time.Second, env, "status", "nosuch")
	if r.code != ExitFailure || !strings.Contains(r.stderr, mirrorName) {
		t.Errorf("status nosuch: exit %d\n%s", r.code, r.stderr)
	}

	// kill -9: the dead instance drops out; a new serve of the LUN takes
	// its name and replaces its sockets.
	nc.Close()
	plain.cmd.Process.Signal(syscall.SIGKILL)
	plain.wait(t, 15*time.Second)
	r = lbRun(t, 30*time.Second, env, "status", "--json")
	decodeStrict(t, r.stdout, &list)
	if len(list) != 2 {
		t.Fatalf("after kill -9: %d instances listed: %s", len(list), r.stdout)
	}
	again := startServe(t, env, "serve", "--persistent", plainURL)
	if !strings.Contains(again.line, "socket="+plainSock) {
		t.Fatalf("serve after kill -9: %q, want the dead one's socket %s", again.line, plainSock)
	}
	if d := detail(plainName); d.PID != again.cmd.Process.Pid {
		t.Fatalf("status %s: pid %d, want %d", plainName, d.PID, again.cmd.Process.Pid)
	}
}

// A second serve without --listen gets its own socket (issue 21 item 7):
// the instance directory of its own name, NAME-2.
func TestServeSecondDefaultSocket(t *testing.T) {
	img, _ := serveImage(t, 1<<20)
	dir := t.TempDir()
	run := filepath.Join(dir, "run")
	env := []string{"LUNBRIDGE_RUN_DIR=" + run, "XDG_RUNTIME_DIR=" + dir}
	p1 := startServe(t, env, "serve", "--persistent", "file://"+img)
	p2 := startServe(t, env, "serve", "--persistent", "--read-only", "file://"+img)
	base := strings.TrimSuffix(filepath.Base(img), filepath.Ext(img))
	s1, s2 := filepath.Join(run, base, "nbd.sock"), filepath.Join(run, base+"-2", "nbd.sock")
	if !strings.Contains(p1.line, "socket="+s1) || !strings.Contains(p2.line, "socket="+s2) {
		t.Fatalf("two serves without --listen: %q and %q, want sockets %s and %s", p1.line, p2.line, s1, s2)
	}
	for _, s := range []string{s1, s2} {
		nbdHold(t, "unix", s).Close()
	}
	// status says where the second one listens, under its own name.
	r := lbRun(t, 30*time.Second, env, "status", base+"-2")
	if r.code != 0 || !strings.Contains(r.stdout, base+"-2: serve, pid") || !strings.Contains(r.stdout, "nbd        nbd+unix:///?socket="+s2) {
		t.Fatalf("status %s-2: exit %d\n%s%s", base, r.code, r.stdout, r.stderr)
	}
	// --control-socket elsewhere: still listed, by --instance name.
	ctl := filepath.Join(dir, "ctl.sock")
	startServe(t, env, "--instance", "explicit", "serve", "--persistent", "--read-only", "--control-socket", ctl, "file://"+img)
	r = lbRun(t, 30*time.Second, env, "status")
	if r.code != 0 || !strings.Contains(r.stdout, "\nexplicit ") || !strings.Contains(r.stdout, filepath.Join(run, "explicit", "nbd.sock")) {
		t.Fatalf("status with an instance on --control-socket %s: exit %d\n%s%s", ctl, r.code, r.stdout, r.stderr)
	}
	r = lbRun(t, 30*time.Second, env, "status", "--json", "explicit")
	if !strings.Contains(r.stdout, `"control_socket": "`+ctl+`"`) {
		t.Fatalf("status --json explicit: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
