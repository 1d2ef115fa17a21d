package mirror

import "time"

// AsyncStatus describes the asynchronous leg (mirror status, metrics).
type AsyncStatus struct {
	UUID       UUID    `json:"uuid"`
	WWID       string  `json:"wwid,omitempty"`
	Mode       string  `json:"mode"` // journal, pull-ahead, resync, failed
	Consistent bool    `json:"consistent"`
	Reason     string  `json:"reason,omitempty"`
	Error      string  `json:"error,omitempty"`
	OnLag      string  `json:"on_lag"`
	MaxLag     float64 `json:"max_lag_seconds"`
	MaxBytes   int64   `json:"max_lag_bytes"`
	// LagSeconds is the age of the oldest acknowledged write the remote
	// lacks (journal mode), or the time since it stopped being a current
	// consistent image (other modes); LagBytes what it lacks (journal
	// bytes, or marked chunks times the chunk size).
	LagSeconds     float64   `json:"lag_seconds"`
	LagBytes       int64     `json:"lag_bytes"`
	JournalEntries int       `json:"journal_entries"`
	Inflight       int       `json:"inflight"`
	DirtyChunks    int64     `json:"dirty_chunks"`
	ChunkSize      int64     `json:"chunk_size"`
	Epoch          uint64    `json:"epoch"`
	Sequence       uint64    `json:"sequence"` // writes of the epoch on the remote
	AsOf           time.Time `json:"as_of,omitzero"`
	RateBytes      float64   `json:"link_bytes_per_s"`
	ResyncedBytes  int64     `json:"resynced_bytes"`
	ThrottledNs    int64     `json:"throttled_ns"`
	ReAdds         int       `json:"re_adds,omitempty"`
}

// Status reports the asynchronous leg's mode, lag and journal.
func (a *Async) Status() AsyncStatus {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := AsyncStatus{UUID: a.hdr.Leg, WWID: a.hdr.WWID, Mode: a.mode, Consistent: a.consistent, Reason: a.reason,
		OnLag: a.opts.OnLag, MaxLag: a.opts.MaxLag.Seconds(), MaxBytes: a.opts.MaxLagBytes,
		JournalEntries: len(a.q), Inflight: a.inflight, DirtyChunks: a.bitmap.count(), ChunkSize: a.chunk,
		Epoch: a.epoch, Sequence: a.base - a.epochBase, RateBytes: a.rate, ResyncedBytes: a.copied,
		ThrottledNs: int64(a.throttle), ReAdds: a.readds}
	if a.lastErr != nil {
		s.Error = a.lastErr.Error()
	}
	if a.asOf > 0 {
		s.AsOf = time.Unix(0, a.asOf)
	}
	if a.mode == AsyncJournal {
		if len(a.q) > 0 {
			s.LagSeconds = time.Since(time.Unix(0, a.q[0].acked)).Seconds()
		}
		s.LagBytes = a.jbytes
	} else {
		s.LagSeconds = time.Since(a.lostAt).Seconds()
		s.LagBytes = s.DirtyChunks*a.chunk + a.jbytes
	}
	return s
}
