package main

// What the destructive mirror commands (create, check --repair, resync
// --prefer) show before they ask: each leg's identity, what is recognised
// on it, and what will be overwritten.

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/lunbridge/lunbridge/blockdev"
	"github.com/lunbridge/lunbridge/discovery"
	"github.com/lunbridge/lunbridge/initiator"
	"github.com/lunbridge/lunbridge/multipath/mirror"
)

// legInfo identifies one leg for a prompt.
type legInfo struct {
	Name                          string // "A" or "B"
	URL                           string // without secrets
	Vendor, Product, Serial, WWID string
	Size                          int64
	Block                         int
	Holds                         []string // recognised content, see sniffContent
	Sniffed                       bool     // Holds was looked for
}

func describeLeg(ctx context.Context, name, url string, d blockdev.Device, sniff bool) legInfo {
	li := legInfo{Name: name, URL: redactedURL(url), Size: d.Size(), Block: d.BlockSize()}
	if l, ok := d.(*initiator.LUN); ok {
		li.Vendor, li.Product = strings.TrimSpace(l.Inquiry.Vendor), strings.TrimSpace(l.Inquiry.Product)
	}
	if idr, ok := d.(blockdev.Identifier); ok {
		id := idr.Identity()
		li.Serial, li.WWID = id.Serial, id.WWID
	}
	if strings.HasPrefix(url, "file://") {
		li.Vendor = "local file"
	}
	if !sniff {
		return li
	}
	holds, err := sniffContent(ctx, d)
	if err != nil {
		holds = append(holds, fmt.Sprintf("(could not read the leg to check: %v)", err))
	}
	li.Holds, li.Sniffed = holds, true
	return li
}

func legWWID(d blockdev.Device) string {
	if idr, ok := d.(blockdev.Identifier); ok {
		return idr.Identity().WWID
	}
	return ""
}

// identity is the one-line "vendor product, serial, WWID, size" of a leg.
func (l legInfo) identity() string {
	var parts []string
	if vp := strings.TrimSpace(l.Vendor + " " + l.Product); vp != "" {
		parts = append(parts, vp)
	}
	if l.Serial != "" {
		parts = append(parts, "serial "+l.Serial)
	}
	if l.WWID != "" {
		parts = append(parts, "WWID "+l.WWID)
	}
	parts = append(parts, fmt.Sprintf("%s (%d-byte blocks)", formatBytes(l.Size), l.Block))
	return strings.Join(parts, ", ")
}

func (l legInfo) holds() string {
	if len(l.Holds) == 0 {
		return "no partition table, file system or mirror metadata recognised"
	}
	return strings.Join(l.Holds, "; ")
}

// writeLegs prints the identity block of the legs.
func writeLegs(w io.Writer, legs ...legInfo) {
	for _, l := range legs {
		fmt.Fprintf(w, "  leg %s  %s\n", l.Name, l.URL)
		fmt.Fprintf(w, "         %s\n", l.identity())
		if l.Sniffed || len(l.Holds) > 0 {
			fmt.Fprintf(w, "         holds: %s\n", l.holds())
		}
	}
}

// sniffContent names what a leg recognisably holds, like wipefs or
// mdadm's warnings: a GPT ("EFI PART" at LBA 1), an MBR or boot sector
// (0x55AA at byte 510), an ext2/3/4 superblock (0xEF53 at byte 1080), XFS
// ("XFSB" at 0), an LVM2 label ("LABELONE" in one of the first 4 sectors)
// and lunbridge mirror metadata (at the end).
func sniffContent(ctx context.Context, d blockdev.Device) ([]string, error) {
	bs := int64(d.BlockSize())
	n := (max(8192, 2*bs) + bs - 1) / bs * bs
	n = min(n, d.Size()/bs*bs)
	var found []string
	if n > 0 {
		b := make([]byte, n)
		if err := d.ReadAt(ctx, b, 0); err != nil {
			return nil, err
		}
		found = sniffHead(b, bs)
	}
	if ok, err := mirror.HasMetadata(ctx, d); err != nil {
		return found, err
	} else if ok {
		found = append(found, "lunbridge mirror metadata")
	}
	return found, nil
}

// sniffHead recognises signatures in the first bytes of a device.
func sniffHead(b []byte, bs int64) []string {
	at := func(off int, sig string) bool {
		return off >= 0 && off+len(sig) <= len(b) && string(b[off:off+len(sig)]) == sig
	}
	var found []string
	gpt := at(int(bs), "EFI PART") || at(512, "EFI PART") || at(4096, "EFI PART")
	if gpt {
		found = append(found, "GPT partition table (its backup copy at the end of the LUN would be overwritten)")
	} else if len(b) >= 512 && b[510] == 0x55 && b[511] == 0xAA {
		found = append(found, "MBR partition table or boot sector (0x55AA)")
	}
	if len(b) >= 1082 && b[1080] == 0x53 && b[1081] == 0xEF {
		found = append(found, "ext2/3/4 file system")
	}
	if at(0, "XFSB") {
		found = append(found, "XFS file system")
	}
	for s := 0; s < 4; s++ {
		if at(s*512, "LABELONE") {
			found = append(found, "LVM2 physical volume")
			break
		}
	}
	return found
}

// sameLUNURLs reports whether two URLs name the same LUN: the same
// portal, target (IQNs are case-insensitive) and LUN, or the same file.
// Opening one LUN twice from one process would also reuse one ISID.
func sameLUNURLs(a, b string) bool {
	if strings.HasPrefix(a, "file://") && strings.HasPrefix(b, "file://") {
		pa, pb := filepath.Clean(strings.TrimPrefix(a, "file://")), filepath.Clean(strings.TrimPrefix(b, "file://"))
		if pa == pb {
			return true
		}
		sa, ea := os.Stat(pa)
		sb, eb := os.Stat(pb)
		return ea == nil && eb == nil && os.SameFile(sa, sb)
	}
	ua, ea := discovery.ParseURL(a)
	ub, eb := discovery.ParseURL(b)
	if ea != nil || eb != nil {
		return false
	}
	return strings.EqualFold(ua.Portal, ub.Portal) && strings.EqualFold(ua.Target, ub.Target) &&
		ua.HasLUN == ub.HasLUN && ua.LUN == ub.LUN
}

// createPlanText is what mirror create prints before it asks.
func createPlanText(a, b legInfo, g mirror.Geometry, assumeClean bool, proof string) string {
	var w bytes.Buffer
	fmt.Fprintf(&w, "mirror create writes to these two LUNs:\n")
	writeLegs(&w, a, b)
	fmt.Fprintf(&w, "It will overwrite:\n")
	for i, l := range []legInfo{a, b} {
		fmt.Fprintf(&w, "  - the last %s of leg %s (from offset %d): mirror metadata and write-intent bitmap\n",
			formatBytes(l.Size-g.MetaStart[i]), l.Name, g.MetaStart[i])
	}
	fmt.Fprintf(&w, "  - the mirror exports %d bytes (%s), %s less than the smaller leg: anything past that on either leg (a GPT backup header, the end of a file system) is lost\n",
		g.Exported, formatBytes(g.Exported), formatBytes(min(a.Size, b.Size)-g.Exported))
	if assumeClean {
		fmt.Fprintf(&w, "  - no data is copied (--assume-clean): %s\n", proof)
	} else {
		fmt.Fprintf(&w, "  - ALL of leg B (%s): its first %s are replaced with leg A's content (initial sync); leg A's data is kept\n",
			b.URL, formatBytes(g.Exported))
	}
	return w.String()
}

// createRefusal is the one-line error without a terminal and --yes.
func createRefusal(a, b legInfo, g mirror.Geometry, assumeClean bool) string {
	what := fmt.Sprintf("the last %s of both LUNs", formatBytes(max(a.Size-g.MetaStart[0], b.Size-g.MetaStart[1])))
	if !assumeClean {
		what += fmt.Sprintf(" and all of leg B %s (%s), copied over from leg A %s", b.URL, formatBytes(g.Exported), a.URL)
	}
	var holds []string
	for _, l := range []legInfo{a, b} {
		if len(l.Holds) > 0 {
			holds = append(holds, fmt.Sprintf("leg %s holds: %s", l.Name, strings.Join(l.Holds, ", ")))
		}
	}
	if len(holds) > 0 {
		what += " (" + strings.Join(holds, "; ") + ")"
	}
	return fmt.Sprintf("mirror create would overwrite %s; nothing written: add --yes to confirm (no terminal to ask on)", what)
}

// inspectLegs opens both legs read-only (a missing leg is tolerated),
// identifies them and reads their mirror metadata, and closes them again:
// the prompt of check --repair and resync --prefer needs them before the
// mirror is assembled (the mirror holds the legs' sessions until it
// closes).
func inspectLegs(c *cli.Context, a, b string) ([]legInfo, mirror.Status, error) {
	da, db, err := openLegs(c, a, b, true, true)
	if err != nil {
		return nil, mirror.Status{}, err
	}
	var legs []legInfo
	for i, d := range []blockdev.Device{da, db} {
		name, url := legNameOf(i), []string{a, b}[i]
		if d == nil {
			legs = append(legs, legInfo{Name: name, URL: redactedURL(url), Holds: []string{"(unreachable)"}})
			continue
		}
		defer d.Close()
		legs = append(legs, describeLeg(c.Context, name, url, d, false))
	}
	st, err := mirror.Inspect(c.Context, da, db)
	return legs, st, err
}

func legNameOf(i int) string { return string(rune('A' + i)) }

func describeLegURLs(c *cli.Context, a, b string) ([]legInfo, error) {
	legs, _, err := inspectLegs(c, a, b)
	if legs != nil {
		return legs, nil // a metadata problem is the assembly's to report
	}
	return nil, err
}

// checkRefusal is mirror check --repair's error without a terminal and --yes.
func checkRefusal(a, b string) string {
	return fmt.Sprintf("mirror check --repair rewrites every chunk of leg B %s that differs from leg A %s, with leg A as the source "+
		"whichever leg holds the right data; nothing written: add --yes to confirm (no terminal to ask on), "+
		"or run mirror check without --repair to see the differences first", redactedURL(b), redactedURL(a))
}

// checkRepairText is shown before check --repair asks.
func checkRepairText(legs []legInfo, res mirror.CheckResult) string {
	var w bytes.Buffer
	fmt.Fprintf(&w, "mirror check found %d differing chunks (%d differing blocks", res.Mismatches, res.MismatchBlocks)
	if len(res.FirstOffsets) > 0 {
		fmt.Fprintf(&w, ", first at offsets %v", res.FirstOffsets)
	}
	fmt.Fprintf(&w, ") between the legs:\n")
	writeLegs(&w, legs...)
	fmt.Fprintf(&w, "--repair makes leg A the source: those %d chunks of leg B (up to %s) are overwritten with leg A's data, whichever leg is right. Leg A is not written.\n",
		res.Mismatches, formatBytes(res.Mismatches*max(res.BytesCompared/max(res.Chunks, 1), 1)))
	return w.String()
}

// confirmPrefer asks before mirror resync --prefer makes leg src the
// source of the other leg.
func confirmPrefer(c *cli.Context, a, b string, src int) error {
	if c.Bool("yes") {
		return nil
	}
	s, d := legNameOf(src), legNameOf(1-src)
	urls := []string{redactedURL(a), redactedURL(b)}
	if !confirmIO.terminal() {
		return confirm(false, "", fmt.Sprintf("mirror resync --prefer %s keeps leg %s %s and copies it over leg %s %s: "+
			"after a split brain all of leg %s is overwritten, including writes that reached only leg %s; "+
			"nothing written: add --yes to confirm (no terminal to ask on); mirror status shows both legs first",
			s, s, urls[src], d, urls[1-src], d, d))
	}
	legs, st, err := inspectLegs(c, a, b)
	if err != nil {
		return err
	}
	var w bytes.Buffer
	fmt.Fprintf(&w, "mirror resync --prefer %s:\n", s)
	writeLegs(&w, legs...)
	if st.State != "" {
		fmt.Fprintf(&w, "Mirror state: %s", st.State)
		if st.Verdict != "" {
			fmt.Fprintf(&w, " (%s)", st.Verdict)
		}
		fmt.Fprintln(&w)
	}
	fmt.Fprintf(&w, "Leg %s is the source and is not written. Leg %s is made equal to it: after a split brain that is a full copy, "+
		"all %s of leg %s are overwritten from leg %s, including writes that reached only leg %s.\n", s, d, formatBytes(st.Size), d, s, d)
	fmt.Fprint(confirmIO.out, w.String())
	return confirm(false, fmt.Sprintf("Resync leg %s from leg %s?", d, s), "")
}
