package serve

import (
	"sync"
	"sync/atomic"
)

// Stats are the handler's counters, kept with atomics on the hot paths and
// read by the metrics collector at scrape time.
type Stats struct {
	Opened      atomic.Uint64 // connections upgraded
	MessagesIn  atomic.Uint64 // messages read from clients
	BytesIn     atomic.Uint64 // payload bytes of those messages
	RateLimited atomic.Uint64 // messages refused by the rate limit
	// UnsentAtClose counts frames accepted for a client (the send
	// returned nil) and never written because its session ended first:
	// discarded by a drop (ShutdownNow, pong timeout, a slow consumer's
	// 1013), lost with a write that failed, or still queued when the
	// connection ended. Replies to what a client sent before its close
	// are written before the close frame and are not among them (see
	// closegate.go).
	UnsentAtClose atomic.Uint64

	mu      sync.Mutex
	closes  map[int]uint64    // by close code
	refuses map[int]uint64    // upgrades refused, by HTTP status
	byTrans map[string]uint64 // connections opened, by transport
}

// opened counts a connection in, on the transport named (the label of
// the connection metrics; "other" when the transport gave no name).
func (st *Stats) opened(transport string) {
	st.Opened.Add(1)
	transport = transportName(transport)
	st.mu.Lock()
	if st.byTrans == nil {
		st.byTrans = make(map[string]uint64)
	}
	st.byTrans[transport]++
	st.mu.Unlock()
}

// OpenedByTransport returns how many connections were opened, by
// transport.
func (st *Stats) OpenedByTransport() map[string]uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[string]uint64, len(st.byTrans))
	for k, v := range st.byTrans {
		out[k] = v
	}
	return out
}

func (st *Stats) closed(code int) {
	st.mu.Lock()
	if st.closes == nil {
		st.closes = make(map[int]uint64)
	}
	st.closes[code]++
	st.mu.Unlock()
}

func (st *Stats) refused(status int) {
	st.mu.Lock()
	if st.refuses == nil {
		st.refuses = make(map[int]uint64)
	}
	st.refuses[status]++
	st.mu.Unlock()
}

// Closes returns how many sessions closed, by close code.
func (st *Stats) Closes() map[int]uint64 { return st.snapshot(&st.closes) }

// Refused returns how many upgrades were refused, by HTTP status
// (503 for the connection limit or shutdown, 401/403 from Authorize).
func (st *Stats) Refused() map[int]uint64 { return st.snapshot(&st.refuses) }

// snapshot copies *m under the lock: the map itself is created by the
// first closed or refused call, so even reading the field needs the lock.
func (st *Stats) snapshot(m *map[int]uint64) map[int]uint64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	out := make(map[int]uint64, len(*m))
	for k, v := range *m {
		out[k] = v
	}
	return out
}

// Stats returns the handler's counters.
func (h *Handler) Stats() *Stats { return &h.stats }

// transportName is a transport's name in metrics: "other" for a transport
// that gave none.
func transportName(t string) string {
	if t == "" {
		return "other"
	}
	return t
}
