package mirror

import (
	"context"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/lunbridge/lunbridge/blockdev"
)

// LegStatus describes one leg, like a device line of `mdadm --detail`.
type LegStatus struct {
	Name  string `json:"name"` // "A" or "B"
	UUID  UUID   `json:"uuid"`
	WWID  string `json:"wwid,omitempty"`
	State string `json:"state"` // in-sync, resyncing, stale, failed, split, removed, missing
	Size  int64  `json:"size,omitempty"`
	Error string `json:"error,omitempty"`
	// From the leg's own metadata (Inspect only).
	Generation uint64    `json:"generation,omitempty"`
	GenTime    time.Time `json:"generation_time,omitzero"`
	Updated    time.Time `json:"updated,omitzero"`
	InSync     []string  `json:"in_sync,omitempty"`
	Dirty      int64     `json:"dirty_chunks"`
	Clean      bool      `json:"clean,omitempty"`
	// Automatic re-add (running mirror with Options.Reopen).
	Held           string    `json:"held,omitempty"` // why the leg is not probed: operator action, refused device
	NextProbe      time.Time `json:"next_probe,omitzero"`
	ProbeAttempts  int       `json:"probe_attempts,omitempty"` // since the leg failed
	LastProbeError string    `json:"last_probe_error,omitempty"`
	ReAdds         int       `json:"re_adds,omitempty"` // reattachments since assembly
	// SplitSince is when Split took the leg out (state "split"): it holds
	// the mirror's content of that instant.
	SplitSince time.Time `json:"split_since,omitzero"`
}

// ResyncStatus describes a running or finished resync.
type ResyncStatus struct {
	Target      string        `json:"target"`
	Mode        string        `json:"mode"` // incremental, full, crash, replace (ReplaceLeg: full)
	TotalChunks int64         `json:"total_chunks"`
	DoneChunks  int64         `json:"done_chunks"`
	Percent     float64       `json:"percent"`
	Elapsed     time.Duration `json:"elapsed_ns"`
	MBPerSec    float64       `json:"mb_per_s"`
}

// Status is a snapshot of the mirror, JSON-able.
type Status struct {
	Mirror         UUID          `json:"mirror"`
	State          string        `json:"state"` // clean, active, degraded, resyncing
	Size           int64         `json:"size"`
	BlockSize      int           `json:"block_size"`
	ChunkSize      int64         `json:"chunk_size"`
	Chunks         int64         `json:"chunks"`
	Generation     uint64        `json:"generation"`
	GenerationTime time.Time     `json:"generation_time"`
	Legs           [2]LegStatus  `json:"legs"`
	DirtyChunks    int64         `json:"dirty_chunks"`
	Resync         *ResyncStatus `json:"resync,omitempty"`
	BytesResynced  int64         `json:"bytes_resynced"`
	Verdict        string        `json:"verdict,omitempty"` // Inspect: what assembly would do
	Owner          *Owner        `json:"owner,omitempty"`   // Inspect: the assembly using the mirror
}

// Status reports the legs, generations, dirty chunks and resync progress.
func (m *Mirror) Status() Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := Status{
		Mirror: m.id, Size: m.size, BlockSize: m.bs, ChunkSize: m.chunk, Chunks: m.nchunks,
		Generation: m.gen, GenerationTime: time.Unix(0, m.genTime),
		DirtyChunks: m.bitmap.count(), BytesResynced: m.bytesResynced,
	}
	for i, l := range m.legs {
		ls := LegStatus{Name: legName(i), UUID: m.legUUID[i], WWID: m.legWWID[i]}
		p := m.probe[i]
		ls.ReAdds = p.readds
		if !l.live {
			ls.Held, ls.ProbeAttempts = p.held, p.attempts
			if p.lastErr != nil {
				ls.LastProbeError = p.lastErr.Error()
			}
			if m.opts.Reopen != nil && p.held == "" && !m.closed {
				ls.NextProbe = p.next
			}
		}
		if !l.live {
			ls.SplitSince = p.splitAt
		}
		switch {
		case p.removed && !l.live:
			ls.State = "removed"
		case l.dev == nil:
			ls.State = "missing"
		case !l.live && p.held == heldSplit:
			ls.State = "split"
		case !l.live:
			ls.State = "failed"
		case i == m.target:
			ls.State = "resyncing"
		case m.inSync&(1<<i) != 0:
			ls.State = "in-sync"
		default:
			ls.State = "stale"
		}
		if l.dev != nil {
			ls.Size = l.dev.Size()
		}
		if l.err != nil {
			ls.Error = l.err.Error()
		}
		ls.Dirty = s.DirtyChunks
		s.Legs[i] = ls
	}
	switch {
	case m.target >= 0:
		s.State = "resyncing"
	case !m.allInSyncLocked():
		s.State = "degraded"
	case s.DirtyChunks == 0:
		s.State = "clean"
	default:
		s.State = "active"
	}
	if m.resyncTotal > 0 {
		el := m.resyncElapsed
		if m.target >= 0 {
			el = time.Since(m.resyncStart)
		}
		r := &ResyncStatus{Mode: m.mode, TotalChunks: m.resyncTotal, DoneChunks: m.resyncDone, Elapsed: el}
		r.Target = legName(m.lastTarget)
		r.Percent = 100 * float64(r.DoneChunks) / float64(r.TotalChunks)
		if el > 0 {
			r.MBPerSec = float64(m.bytesResynced) / el.Seconds() / 1e6
		}
		s.Resync = r
	}
	return s
}

// Inspect reads the metadata of both legs without assembling them for
// writing (either may be nil) and reports what assembly would do.
func Inspect(ctx context.Context, a, b blockdev.Device) (Status, error) {
	var s Status
	var hs [2]*header
	for i, d := range []blockdev.Device{a, b} {
		s.Legs[i] = LegStatus{Name: legName(i), State: "missing"}
		if d == nil {
			continue
		}
		h, err := readHeader(ctx, d)
		if err != nil {
			s.Legs[i].State = "unreadable"
			s.Legs[i].Error = err.Error()
			continue
		}
		if hs[h.Index] != nil {
			return s, fmt.Errorf("%w: both devices are leg %s", ErrMismatch, legName(h.Index))
		}
		hs[h.Index] = h
	}
	for i, h := range hs {
		if h == nil {
			continue
		}
		ls := LegStatus{
			Name: legName(i), UUID: h.Leg, WWID: h.WWID, Size: h.LegSize, Generation: h.Gen,
			GenTime: time.Unix(0, h.GenTime), Updated: time.Unix(0, h.Updated),
			Dirty: bitset(h.bitmap).count(), Clean: h.Flags&flagClean != 0,
		}
		if h.Flags&flagSplit != 0 {
			ls.SplitSince = time.Unix(0, h.Updated)
		}
		for k := 0; k < maxLegs; k++ {
			if h.InSync&(1<<k) != 0 {
				ls.InSync = append(ls.InSync, legName(k))
			}
		}
		if h.InSync&(1<<i) != 0 {
			ls.State = "in-sync"
		} else {
			ls.State = "resync-target"
		}
		s.Legs[i] = ls
		s.Mirror, s.Size, s.BlockSize, s.ChunkSize, s.Chunks = h.Mirror, h.Exported, h.BlockSize, h.Chunk, h.nchunks()
		if h.Gen >= s.Generation {
			s.Generation, s.GenerationTime = h.Gen, time.Unix(0, h.GenTime)
		}
	}
	if hs[0] == nil && hs[1] == nil {
		return s, ErrNoMetadata
	}
	if os := activeOwners(hs); len(os) > 0 {
		s.Owner = &os[0]
	}
	p, err := plan(hs[0], hs[1], -1)
	if err != nil {
		s.State = "split-brain"
		s.Verdict = err.Error()
		return s, nil
	}
	s.Verdict = p.why
	s.DirtyChunks = p.bitmap.count()
	switch {
	case hs[0] == nil || hs[1] == nil:
		s.State = "degraded"
	case p.target >= 0:
		s.State = "needs-resync"
		s.Legs[p.target].State = "stale"
		if !s.Legs[p.target].SplitSince.IsZero() {
			s.Legs[p.target].State = "split"
		}
	case s.DirtyChunks == 0:
		s.State = "clean"
	default:
		s.State = "active"
	}
	return s, nil
}

// UnmarshalText parses the form MarshalText prints, so a Status read back
// from JSON (a running process's control socket) keeps its UUIDs.
func (u *UUID) UnmarshalText(b []byte) error {
	h := strings.ReplaceAll(string(b), "-", "")
	if len(h) != 32 {
		return fmt.Errorf("mirror: bad UUID %q", b)
	}
	if _, err := hex.Decode(u[:], []byte(h)); err != nil {
		return fmt.Errorf("mirror: bad UUID %q: %w", b, err)
	}
	return nil
}
