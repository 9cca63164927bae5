package rooms

import (
	"sort"
	"unsafe"
)

// Entry is one room message kept in history: its sequence number and its
// room.message payload, already encoded.
type Entry struct {
	Seq     uint64
	Payload []byte
}

// History is where a room keeps its recent messages, for resume (join with
// "since") and room.history. The room actor is its only user, so an
// implementation needs no locking; a durable store can implement it too.
type History interface {
	// Append records the message with sequence number seq (always the
	// previous seq + 1).
	Append(seq uint64, payload []byte)
	// Since returns the messages with a sequence number above since, oldest
	// first, and whether every one of them was still held.
	Since(since uint64) (entries []Entry, complete bool)
	// Before returns up to limit messages with a sequence number below
	// before (0: the newest), oldest first.
	Before(before uint64, limit int) []Entry
}

// Trimmer is what a History implements to take part in the server's
// history budget (troupe.Config.HistoryBudget), which bounds the memory of
// every room's history together. The in-memory history implements it. A
// History that does not is counted as holding nothing and is never
// trimmed: a durable store keeps its messages outside the process, and
// bounds them itself. The dormant-room bound (troupe.Config.MaxDormantRooms)
// applies whatever the History.
type Trimmer interface {
	// Bytes returns the memory the history holds: the payloads and the
	// history's own bookkeeping. The room actor calls it after every
	// Append and Trim, so it must be cheap.
	Bytes() int
	// Trim drops the oldest messages until Bytes is at most max (every
	// message, if need be). A dropped message is one that Since must then
	// report missing (complete false): a resume from before it is not
	// recovered.
	Trim(max int)
}

// Default history bounds.
const (
	DefaultHistoryMessages = 1000
	DefaultHistoryBytes    = 1 << 20
)

// NewMemoryHistory returns a History that keeps the last maxMessages
// messages, and no more than maxBytes of payload, in memory.
func NewMemoryHistory(maxMessages, maxBytes int) History {
	if maxMessages <= 0 {
		maxMessages = DefaultHistoryMessages
	}
	if maxBytes <= 0 {
		maxBytes = DefaultHistoryBytes
	}
	return &memoryHistory{maxMsgs: maxMessages, maxBytes: maxBytes}
}

// memoryHistory is a ring of the newest entries. It grows its slice only as
// messages arrive, so a quiet room costs nothing.
type memoryHistory struct {
	ring     []Entry
	head     int // index of the oldest entry
	n        int
	bytes    int
	maxMsgs  int
	maxBytes int
	last     uint64 // newest seq ever appended
}

// entrySize is the bookkeeping of one slot of the ring, counted by Bytes.
const entrySize = int(unsafe.Sizeof(Entry{}))

func (h *memoryHistory) at(i int) *Entry { return &h.ring[(h.head+i)%len(h.ring)] }

// dropOldest forgets the oldest entry.
func (h *memoryHistory) dropOldest() {
	old := h.at(0)
	h.bytes -= len(old.Payload)
	*old = Entry{}
	h.head = (h.head + 1) % len(h.ring)
	h.n--
}

// Bytes counts the payloads and the ring's slots, so that a room of many
// small messages counts what its ring costs.
func (h *memoryHistory) Bytes() int { return h.bytes + len(h.ring)*entrySize }

// Trim drops the oldest entries until Bytes is at most max. A ring left
// at most half full is reallocated to its entries, so that the slots a
// trim frees are given back too.
func (h *memoryHistory) Trim(max int) {
	for h.n > 0 && h.bytes+h.slotsFor(h.n)*entrySize > max {
		h.dropOldest()
	}
	if s := h.slotsFor(h.n); s < len(h.ring) {
		var ring []Entry
		if s > 0 {
			ring = make([]Entry, s)
			for i := 0; i < h.n; i++ {
				ring[i] = *h.at(i)
			}
		}
		h.ring, h.head = ring, 0
	}
}

// slotsFor is the ring's length after a Trim that leaves n entries.
func (h *memoryHistory) slotsFor(n int) int {
	if n <= len(h.ring)/2 {
		return n
	}
	return len(h.ring)
}

func (h *memoryHistory) Append(seq uint64, payload []byte) {
	h.last = seq
	if len(payload) > h.maxBytes {
		return // too large to keep at all; Since will report it missing
	}
	for h.n > 0 && (h.n >= h.maxMsgs || h.bytes+len(payload) > h.maxBytes) {
		h.dropOldest()
	}
	if h.n == len(h.ring) {
		grown := make([]Entry, min(max(2*len(h.ring), 16), h.maxMsgs))
		for i := 0; i < h.n; i++ {
			grown[i] = *h.at(i)
		}
		h.ring, h.head = grown, 0
	}
	*h.at(h.n) = Entry{Seq: seq, Payload: payload}
	h.n++
	h.bytes += len(payload)
}

func (h *memoryHistory) Since(since uint64) ([]Entry, bool) {
	if since >= h.last {
		return nil, true
	}
	var out []Entry
	for i := 0; i < h.n; i++ {
		if e := h.at(i); e.Seq > since {
			out = append(out, *e)
		}
	}
	complete := len(out) > 0 && out[0].Seq == since+1 && uint64(len(out)) == h.last-since
	return out, complete
}

func (h *memoryHistory) Before(before uint64, limit int) []Entry {
	if limit <= 0 {
		return nil
	}
	end := h.n // entries [start, end) are below before
	if before > 0 {
		// Entries ascend by seq: a binary search, so that paging through
		// a long history from its start (a resync's catch-up) costs
		// log n per page, not n.
		end = sort.Search(h.n, func(i int) bool { return h.at(i).Seq >= before })
	}
	start := max(end-limit, 0)
	out := make([]Entry, 0, end-start)
	for i := start; i < end; i++ {
		out = append(out, *h.at(i))
	}
	return out
}
