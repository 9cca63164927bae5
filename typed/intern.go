package typed

import (
	"maps"
	"sync"
	"sync/atomic"
)

// The types of a server's envelopes are a few names repeated in every
// message; a string made for each was one of the decoder's allocations per
// message. intern hands out one string per name instead, for the first
// maxInterned short names it sees: what a client can make it keep is
// bounded (maxInterned x maxInternLen bytes), and names past that
// are made per message as before. Rooms are not interned: an application
// may have far more of them than types, and they would crowd the types
// out.
const (
	maxInterned  = 1024
	maxInternLen = 64
)

var (
	interned  atomic.Pointer[map[string]string] // copied on write
	internMu  sync.Mutex
	internLen int // entries in interned, under internMu
)

// intern returns string(b), shared where it can be.
func intern(b []byte) string {
	if len(b) > maxInternLen {
		return string(b)
	}
	if m := interned.Load(); m != nil {
		if s, ok := (*m)[string(b)]; ok {
			return s
		}
		if len(*m) >= maxInterned {
			return string(b) // full for good: no lock to find that out
		}
	}
	internMu.Lock()
	defer internMu.Unlock()
	var next map[string]string
	if m := interned.Load(); m != nil {
		if s, ok := (*m)[string(b)]; ok {
			return s
		}
		if internLen >= maxInterned {
			return string(b)
		}
		next = maps.Clone(*m)
	} else {
		next = make(map[string]string)
	}
	s := string(b)
	next[s] = s
	internLen = len(next)
	interned.Store(&next)
	return s
}
