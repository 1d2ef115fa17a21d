package e2e

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lunbridge/lunbridge/internal/testrig/faultproxy"
	"github.com/lunbridge/lunbridge/internal/testrig/targets"
)

// TestPullRandom: a LUN full of random bytes pulled by `lunbridge pull` is
// identical to the backing file and to what qemu-img (libiscsi) reads; the
// FILE.sha256 matches sha256sum; the --json summary adds up.
func TestPullRandom(t *testing.T) {
	eachKindSerial(t, func(t *testing.T, kind string) {
		const size = 1 * gib
		qemu := tool(t, "qemu-img")
		sha := tool(t, "sha256sum")
		srv := startTarget(t, kind, targets.LUN{Size: size})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, size, 1)
		dir := scratch(t)
		out := filepath.Join(dir, "pull.img")

		r := lbOK(t, 2*time.Minute, "pull", "--json", "--checksum", "sha256", srv.URL(0, 0), out)
		var s copySummary
		parseJSON(t, r.stdout, &s)
		sameFiles(t, out, backing)

		// sha256sum -c hashes the image and checks it against FILE.sha256
		// as written (run from the file's directory, as users do).
		if check := runIn(t, dir, sha, "-c", "pull.img.sha256"); check.code != 0 || !strings.Contains(check.stdout, "pull.img: OK") {
			t.Errorf("sha256sum -c pull.img.sha256: %s", check)
		}
		b, err := os.ReadFile(out + ".sha256")
		if err != nil {
			t.Fatalf("checksum file: %v", err)
		}
		if f := strings.Fields(string(b)); len(f) != 2 || f[0] != s.SHA256 || filepath.Base(strings.TrimPrefix(f[1], "*")) != "pull.img" || len(s.SHA256) != 64 {
			t.Errorf("%s.sha256 = %q; --json sha256 %q", out, b, s.SHA256)
		}
		if s.TotalBytes != size || s.BytesRead+s.HolesBytes != size || s.BytesWritten != size || s.HolesBytes != 0 ||
			s.Seconds <= 0 || s.MBPerS <= 0 || s.Device != srv.URL(0, 0) || s.File != out {
			t.Errorf("--json summary not sane for a %d-byte random LUN: %+v", int64(size), s)
		}

		qout := filepath.Join(dir, "qemu.img")
		qr := runOK(t, 2*time.Minute, qemu, "convert", "-O", "raw", srv.URL(0, 0), qout)
		sameFiles(t, out, qout)
		t.Logf("FIGURES %s 1 GiB random: lunbridge pull %v (%s, summary says %.0f MB/s); qemu-img convert %v (%s)",
			kind, r.dur.Round(time.Millisecond), mbps(size, r.dur), s.MBPerS, qr.dur.Round(time.Millisecond), mbps(size, qr.dur))
	})
}

// runIn runs a command in a directory.
func runIn(t testing.TB, dir, name string, args ...string) result {
	t.Helper()
	wd, _ := os.Getwd()
	if err := os.Chdir(dir); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir(wd)
	return run(t, time.Minute, name, args...)
}

// TestPull4K: a LUN with 4096-byte blocks, random data around a hole.
func TestPull4K(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 64 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size, BlockSize: 4096})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, 16*mib, 2)
		fillRandom(t, backing, 40*mib+4096, 5*mib+12288, 3)
		fillRandom(t, backing, size-4096, 4096, 4)

		info := lbOK(t, time.Minute, "info", "--json", srv.URL(0, 0))
		if !regexp.MustCompile(`"block_size(_bytes)?":\s*4096`).MatchString(info.stdout) {
			t.Errorf("info does not show 4096-byte blocks:\n%s", info.stdout)
		}
		out := filepath.Join(scratch(t), "pull.img")
		lbOK(t, time.Minute, "pull", srv.URL(0, 0), out)
		sameFiles(t, out, backing)
		// A range pull at 4K granularity.
		part := out + ".part"
		lbOK(t, time.Minute, "pull", "--offset", "40M", "--length", strconv.Itoa(8*mib), srv.URL(0, 0), part)
		if got, want := readAt(t, part, 0, 8*mib), readAt(t, backing, 40*mib, 8*mib); string(got) != string(want) {
			t.Errorf("--offset 40M --length 8M differs from the backing file")
		}
		// An offset that is not a multiple of the block size is refused.
		if r := lb(t, time.Minute, "pull", "--offset", "512", "--length", "4096", srv.URL(0, 0), out+".bad"); r.code == 0 {
			t.Errorf("pull --offset 512 on a 4K LUN succeeded: %s", r)
		}
	})
}

// TestPullSparseHuge: a 3 TiB LUN with a few MiB written at the start, the
// middle and the end (through the initiator, so also beyond 2 TiB).
// On a thin tgtd LUN the whole LUN is pulled: GET LBA STATUS skips the
// holes and the output stays sparse. Without thin provisioning (istgt, thick
// tgtd) a full pull would read 3 TiB of zeroes; a 1 GiB range across the
// 2 TiB boundary and the last 64 MiB are pulled instead (zero detection
// keeps them sparse) and the full-pull time is extrapolated.
func TestPullSparseHuge(t *testing.T) {
	const size = 3 * tib
	regions := []struct {
		off, n int64
	}{{0, 3 * mib}, {size/2 - mib, 3 * mib}, {size - 4*mib, 4 * mib}}
	write := func(t *testing.T, srv *targets.Server) {
		l := openLUN(t, srv, 0, 0)
		if l.Size() != size {
			t.Fatalf("LUN size %d, want %d", l.Size(), int64(size))
		}
		for i, r := range regions {
			if err := l.WriteAt(context.Background(), randBytes(uint64(10+i), int(r.n)), r.off, false); err != nil {
				t.Fatalf("write [%d,+%d): %v", r.off, r.n, err)
			}
		}
		if err := l.Flush(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	checkRegions := func(t *testing.T, out string, base int64) {
		for i, r := range regions {
			if r.off < base || r.off+r.n > base+fileSize(t, out) {
				continue
			}
			if string(readAt(t, out, r.off-base, r.n)) != string(randBytes(uint64(10+i), int(r.n))) {
				t.Errorf("region [%d,+%d) differs in the pulled image", r.off, r.n)
			}
		}
	}
	t.Run("tgtd-thin-full", func(t *testing.T) {
		srv := startTarget(t, targets.KindTgtd, targets.LUN{Size: size, Thin: true})
		write(t, srv)
		out := filepath.Join(scratch(t), "huge.img")
		// --checksum none: SHA-256 has to hash every byte, holes included
		// (3 TiB of zeroes); that cost is measured separately below.
		r := lbOK(t, 5*time.Minute, "pull", "--json", "--checksum", "none", srv.URL(0, 0), out)
		var s copySummary
		parseJSON(t, r.stdout, &s)
		if fileSize(t, out) != size {
			t.Fatalf("output is %d bytes, want %d", fileSize(t, out), int64(size))
		}
		alloc := allocated(t, out)
		if alloc > 64*mib {
			t.Errorf("output allocates %d bytes on disk; want ≪ %d (holes not preserved)", alloc, int64(size))
		}
		checkRegions(t, out, 0)
		t.Logf("FIGURES tgtd thin 3 TiB sparse pull (--checksum none): %v, read %d bytes, holes %d bytes, output allocates %d bytes",
			r.dur.Round(time.Millisecond), s.BytesRead, s.HolesBytes, alloc)
		// With --checksum sha256 every byte of the image is hashed, holes
		// included; the default blkhash adds a constant digest per 64 KiB
		// hole block. Measure both on 2 GiB of holes and extrapolate.
		part := filepath.Join(filepath.Dir(out), "part.img")
		h := lbOK(t, 2*time.Minute, "pull", "--json", "--checksum", "sha256", "--length", "2G", "--offset", "1G", srv.URL(0, 0), part)
		var hs copySummary
		parseJSON(t, h.stdout, &hs)
		if hs.SHA256 != sha256File(t, part) || allocated(t, part) != 0 {
			t.Errorf("2 GiB hole range: sha256 %s, allocated %d", hs.SHA256, allocated(t, part))
		}
		os.Remove(part)
		os.Remove(part + ".sha256")
		b := lbOK(t, 2*time.Minute, "pull", "--json", "--length", "2G", "--offset", "1G", srv.URL(0, 0), part)
		var bs copySummary
		parseJSON(t, b.stdout, &bs)
		if bs.Blkhash != blkhashFile(t, part) || bs.ChecksumAlgo != "blkhash" {
			t.Errorf("2 GiB hole range: blkhash %q (%s), want %s", bs.Blkhash, bs.ChecksumAlgo, blkhashFile(t, part))
		}
		t.Logf("FIGURES tgtd thin, 2 GiB of holes: --checksum sha256 %v (a full 3 TiB pull would need ≈ %v of hashing), default blkhash %v (≈ %v)",
			h.dur.Round(time.Millisecond), time.Duration(float64(h.dur)*float64(size)/float64(2*gib)).Round(time.Second),
			b.dur.Round(time.Millisecond), time.Duration(float64(b.dur)*float64(size)/float64(2*gib)).Round(time.Second))
	})
	for _, kind := range kinds {
		t.Run(kind+"-thick-ranges", func(t *testing.T) {
			srv := startTarget(t, kind, targets.LUN{Size: size})
			write(t, srv)
			dir := scratch(t)
			out := filepath.Join(dir, "range.img")
			base := int64(2*tib - 512*mib)
			r := lbOK(t, 3*time.Minute, "pull", "--json", "--offset", strconv.FormatInt(base, 10), "--length", "1G", srv.URL(0, 0), out)
			var s copySummary
			parseJSON(t, r.stdout, &s)
			if fileSize(t, out) != gib || allocated(t, out) > 16*mib {
				t.Errorf("range output: size %d allocated %d; want %d, sparse", fileSize(t, out), allocated(t, out), int64(gib))
			}
			tail := filepath.Join(dir, "tail.img")
			lbOK(t, time.Minute, "pull", "--offset", strconv.FormatInt(size-64*mib, 10), srv.URL(0, 0), tail)
			checkRegions(t, tail, size-64*mib)
			if want := readAt(t, srv.BackingFile(0, 0), size-64*mib, 64*mib); string(readAt(t, tail, 0, 64*mib)) != string(want) {
				t.Errorf("last 64 MiB differ from the backing file")
			}
			full := time.Duration(float64(r.dur) * float64(size) / float64(gib))
			t.Logf("FIGURES %s thick 3 TiB: 1 GiB zero range across 2 TiB pulled in %v (%s, holes %d); a full pull would take ≈ %v",
				kind, r.dur.Round(time.Millisecond), mbps(gib, r.dur), s.HolesBytes, full.Round(time.Second))
		})
	}
}

// TestPushPull: an image pushed to a LUN lands in the backing file, and a
// pull of the LUN gives the image back.
func TestPushPull(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 256 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, size, 20) // old content, overwritten by the push (zeros included)
		dir := scratch(t)
		img := filepath.Join(dir, "image.img")
		makeFile(t, img, size)
		fillRandom(t, img, 0, 100*mib, 21)
		fillRandom(t, img, 150*mib+512, 50*mib, 22) // zeros (a hole) in between, unaligned edge
		r := lbOK(t, 2*time.Minute, "push", "--yes", "--json", img, srv.URL(0, 0))
		var s copySummary
		parseJSON(t, r.stdout, &s)
		if s.TotalBytes != size {
			t.Errorf("push summary: %+v", s)
		}
		sameFiles(t, backing, img)
		out := filepath.Join(dir, "pulled.img")
		lbOK(t, 2*time.Minute, "pull", srv.URL(0, 0), out)
		sameFiles(t, out, img)
		t.Logf("FIGURES %s push 256 MiB (150 MiB data): %v, %+v", kind, r.dur.Round(time.Millisecond), s)

		// An image larger than the LUN is refused and nothing is written.
		big := filepath.Join(dir, "big.img")
		makeFile(t, big, size+mib)
		if r := lb(t, time.Minute, "push", "--yes", big, srv.URL(0, 0)); r.code == 0 || !strings.Contains(r.stderr, "larger") {
			t.Errorf("push of an oversized image: %s", r)
		}
		sameFiles(t, backing, img)
	})
}

// TestPushReadOnly: a push to a read-only LUN fails before any data moves.
func TestPushReadOnly(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 64 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size, ReadOnly: true})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, size, 30)
		before := sha256File(t, backing)
		img := filepath.Join(scratch(t), "image.img")
		makeFile(t, img, size)
		fillRandom(t, img, 0, size, 31)
		r := lb(t, time.Minute, "push", "--yes", img, srv.URL(0, 0))
		if r.code == 0 {
			t.Fatalf("push to a read-only LUN succeeded: %s", r)
		}
		if !strings.Contains(strings.ToLower(r.stderr), "read-only") {
			t.Errorf("push to a read-only LUN: message does not say read-only: %s", r)
		}
		if after := sha256File(t, backing); after != before {
			t.Errorf("backing file of the read-only LUN changed")
		}
		t.Logf("%s: exit %d: %s", kind, r.code, strings.TrimSpace(r.stderr))
	})
}

// TestPullKillResume: kill -9 a rate-limited pull at about half way;
// `pull --resume` completes it and the result is identical.
func TestPullKillResume(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 256 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, size, 40)
		dir := scratch(t)
		out := filepath.Join(dir, "pull.img")
		// 32 MB/s: about 8 s in all, so the resume state (synced every 2 s)
		// has been written a few times when the kill comes at half way.
		p := start(t, lbPath, "pull", "--rate-limit", "32M", srv.URL(0, 0), out)
		deadline := time.Now().Add(time.Minute)
		for {
			if p.exited() {
				t.Fatalf("pull finished before it could be killed: %v\n%s", p.err, p.stderr.String())
			}
			if st, err := os.Stat(out); err == nil && allocated(t, out) >= size/2 && st.Size() > 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("pull did not reach 50%% in a minute")
			}
			time.Sleep(20 * time.Millisecond)
		}
		p.cmd.Process.Signal(syscall.SIGKILL)
		p.wait(t, 10*time.Second)
		at := allocated(t, out)
		if _, err := os.Stat(out + ".lunbridge-resume"); err != nil {
			t.Fatalf("no resume state after kill -9: %v", err)
		}
		if compareFiles(out, backing) == nil {
			t.Fatalf("output already complete after kill -9 (the test did not interrupt anything)")
		}
		// Without --resume an existing partial file is refused.
		if r := lb(t, time.Minute, "pull", srv.URL(0, 0), out); r.code == 0 {
			t.Errorf("pull over a partial file without --resume/--force succeeded")
		}
		// The killed pull hashed with the default blkhash; resuming with
		// sha256 rehashes the part already on disk.
		r := lbOK(t, 2*time.Minute, "pull", "--resume", "--json", "--checksum", "sha256", srv.URL(0, 0), out)
		var s copySummary
		parseJSON(t, r.stdout, &s)
		sameFiles(t, out, backing)
		if want := sha256File(t, backing); s.SHA256 != want {
			t.Errorf("resumed pull sha256 %s, want %s", s.SHA256, want)
		}
		if s.ResumedBytes < 32*mib || s.ResumedBytes > at {
			t.Errorf("resumed_bytes %d; killed with %d bytes written (the last checkpoint should be at most ~2 s = 64 MB behind)", s.ResumedBytes, at)
		}
		if _, err := os.Stat(out + ".lunbridge-resume"); err == nil {
			t.Errorf("resume state left behind after a complete pull")
		}
		t.Logf("%s: killed at %d of %d bytes; resume: %+v", kind, at, int64(size), s)
	})
}

// TestVerifyFlippedByte: verify passes on a fresh pull and reports a single
// byte flipped behind our back in the backing file (exit 6, its offset).
func TestVerifyFlippedByte(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 64 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, 32*mib, 50)
		out := filepath.Join(scratch(t), "pull.img")
		lbOK(t, time.Minute, "pull", srv.URL(0, 0), out)
		lbOK(t, time.Minute, "verify", srv.URL(0, 0), out)

		for _, off := range []int64{12345677, 48*mib + 3} { // in data, in a hole
			b := readAt(t, backing, off, 1)
			b[0] ^= 0x5a
			writeAt(t, backing, b, off)
			r := lb(t, time.Minute, "verify", "--json", srv.URL(0, 0), out)
			if r.code != 6 {
				t.Fatalf("verify after flipping byte %d: %s; want exit 6", off, r)
			}
			var v struct {
				Equal      bool    `json:"equal"`
				DiffBytes  int64   `json:"diff_bytes"`
				FirstDiffs []int64 `json:"first_diffs"`
			}
			parseJSON(t, r.stdout, &v)
			if v.Equal || v.DiffBytes != 1 || len(v.FirstDiffs) != 1 || v.FirstDiffs[0] != off {
				t.Errorf("verify after flipping byte %d: %s", off, r.stdout)
			}
			txt := lb(t, time.Minute, "verify", srv.URL(0, 0), out)
			if txt.code != 6 || !strings.Contains(txt.stdout, strconv.FormatInt(off, 10)) {
				t.Errorf("verify (text) does not name offset %d: %s", off, txt)
			}
			b[0] ^= 0x5a
			writeAt(t, backing, b, off)
		}
		lbOK(t, time.Minute, "verify", srv.URL(0, 0), out)
	})
}

// TestPullConnectionReset: connections reset by a proxy while a pull runs;
// the initiator recovers the session and the image is still identical.
func TestPullConnectionReset(t *testing.T) {
	eachKind(t, func(t *testing.T, kind string) {
		const size = 256 * mib
		srv := startTarget(t, kind, targets.LUN{Size: size})
		backing := srv.BackingFile(0, 0)
		fillRandom(t, backing, 0, size, 60)
		px, err := faultproxy.New(srv.Portal)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { px.Close() })
		out := filepath.Join(scratch(t), "pull.img")
		p := start(t, lbPath, "pull", "--json", "--rate-limit", "48M", proxyURL(srv, 0, 0, px.Addr()), out)
		resets := 0
		for i := 0; i < 3; i++ {
			time.Sleep(1200 * time.Millisecond)
			if p.exited() {
				break
			}
			px.ResetAll()
			resets++
		}
		if code := p.wait(t, 2*time.Minute); code != 0 {
			t.Fatalf("pull through resets: exit %d\n%s", code, p.stderr.String())
		}
		if resets < 2 {
			t.Errorf("only %d resets happened during the pull", resets)
		}
		sameFiles(t, out, backing)
		t.Logf("%s: %d resets, %d connections accepted by the proxy", kind, resets, px.TotalAccepted())
		if px.TotalAccepted() < resets+1 {
			t.Errorf("proxy saw %d connections for %d resets", px.TotalAccepted(), resets)
		}
	})
}
