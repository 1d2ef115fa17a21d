package nbdbridge

import (
	"sync/atomic"
	"time"
)

type opCounters struct {
	requests  atomic.Uint64
	errors    atomic.Uint64
	bytes     atomic.Uint64
	latencyNs atomic.Uint64
}

type counters struct {
	ops            [numCmds + 1]opCounters // last: unknown commands
	connections    atomic.Uint64
	active         atomic.Int64
	protocolErrors atomic.Uint64
}

func (c *counters) op(t uint16) *opCounters {
	if int(t) < numCmds {
		return &c.ops[t]
	}
	return &c.ops[numCmds]
}

// OpStats counts one request type.
type OpStats struct {
	Requests uint64        // completed requests, failed ones included
	Errors   uint64        // requests answered with an error
	Bytes    uint64        // payload bytes (READ and WRITE)
	Latency  time.Duration // sum of request latencies (header read to reply sent)
}

// Stats is a snapshot of a server's counters, for a metrics endpoint.
type Stats struct {
	Read, Write, Flush, Trim, WriteZeroes, Cache, BlockStatus, Unknown OpStats

	Connections       uint64 // accepted since start
	ActiveConnections int64
	ProtocolErrors    uint64 // connections dropped for protocol violations
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	get := func(t uint16) OpStats {
		o := s.stats.op(t)
		return OpStats{
			Requests: o.requests.Load(),
			Errors:   o.errors.Load(),
			Bytes:    o.bytes.Load(),
			Latency:  time.Duration(o.latencyNs.Load()),
		}
	}
	return Stats{
		Read: get(cmdRead), Write: get(cmdWrite), Flush: get(cmdFlush), Trim: get(cmdTrim),
		WriteZeroes: get(cmdWriteZeroes), Cache: get(cmdCache), BlockStatus: get(cmdBlockStatus),
		Unknown:           get(numCmds),
		Connections:       s.stats.connections.Load(),
		ActiveConnections: s.stats.active.Load(),
		ProtocolErrors:    s.stats.protocolErrors.Load(),
	}
}
