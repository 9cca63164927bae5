package rooms_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/troupehq/troupe/rooms"
)

// payloadOf is the payload the history tests append for seq: distinct per
// message, so a test can tell that the right bytes came back.
func payloadOf(seq uint64) []byte { return fmt.Appendf(nil, `{"seq":%d}`, seq) }

// appendRange appends the messages from..to (both included) with payloadOf.
func appendRange(h rooms.History, from, to uint64) {
	for seq := from; seq <= to; seq++ {
		h.Append(seq, payloadOf(seq))
	}
}

// seqs returns the sequence numbers of entries, and fails the test if an
// entry does not carry the payload appended with its number.
func seqs(t *testing.T, entries []rooms.Entry) []uint64 {
	t.Helper()
	out := make([]uint64, 0, len(entries))
	for _, e := range entries {
		if want := payloadOf(e.Seq); string(e.Payload) != string(want) {
			t.Fatalf("entry %d has payload %s, want %s", e.Seq, e.Payload, want)
		}
		out = append(out, e.Seq)
	}
	return out
}

// span returns from..to (both included); nil when to < from.
func span(from, to uint64) []uint64 {
	var out []uint64
	for s := from; s <= to; s++ {
		out = append(out, s)
	}
	return out
}

func checkSince(t *testing.T, h rooms.History, since uint64, want []uint64, wantComplete bool) {
	t.Helper()
	entries, complete := h.Since(since)
	if got := seqs(t, entries); !slices.Equal(got, want) || complete != wantComplete {
		t.Errorf("Since(%d) = %v complete=%v, want %v complete=%v", since, got, complete, want, wantComplete)
	}
}

func checkBefore(t *testing.T, h rooms.History, before uint64, limit int, want []uint64) {
	t.Helper()
	if got := seqs(t, h.Before(before, limit)); !slices.Equal(got, want) {
		t.Errorf("Before(%d, %d) = %v, want %v", before, limit, got, want)
	}
}

// An empty history has nothing to give and has missed nothing: a client
// that saw nothing of a room that published nothing is up to date.
func TestHistoryEmpty(t *testing.T) {
	h := rooms.NewMemoryHistory(10, 1000)
	checkSince(t, h, 0, nil, true)
	checkBefore(t, h, 0, 10, nil)
	checkBefore(t, h, 5, 10, nil)
}

// Within its bounds the history keeps everything: Since returns every
// message after the mark, complete, and a mark at or past the newest
// message returns nothing, complete.
func TestHistorySinceWithinBounds(t *testing.T) {
	h := rooms.NewMemoryHistory(10, 1000)
	appendRange(h, 1, 5)
	checkSince(t, h, 0, span(1, 5), true)
	checkSince(t, h, 3, span(4, 5), true)
	checkSince(t, h, 4, []uint64{5}, true)
	checkSince(t, h, 5, nil, true)
	checkSince(t, h, 9, nil, true)
}

// The count bound evicts the oldest messages first; Since is complete only
// when the mark is at or after the message before the oldest one held.
func TestHistoryCountLimitEvictsOldest(t *testing.T) {
	h := rooms.NewMemoryHistory(3, 1<<20)
	appendRange(h, 1, 10)
	checkSince(t, h, 0, span(8, 10), false)
	checkSince(t, h, 6, span(8, 10), false)
	checkSince(t, h, 7, span(8, 10), true)
	checkSince(t, h, 9, []uint64{10}, true)
	checkBefore(t, h, 0, 100, span(8, 10))
}

// The byte bound counts payload bytes: appending evicts the oldest messages
// until the new one fits, however many that takes.
func TestHistoryByteLimitEvictsOldest(t *testing.T) {
	// payloadOf(1..9) is 9 bytes each: 4 of them fit in 40 bytes.
	h := rooms.NewMemoryHistory(100, 40)
	appendRange(h, 1, 9)
	checkSince(t, h, 0, span(6, 9), false)
	checkSince(t, h, 5, span(6, 9), true)

	// A message of 30 bytes leaves room for one of 9 beside it.
	big := []byte(`{"seq":10,"pad":"xxxxxxxxxxx"}`)
	if len(big) != 30 {
		t.Fatalf("test payload is %d bytes, want 30", len(big))
	}
	h.Append(10, big)
	entries, complete := h.Since(8)
	if len(entries) != 2 || entries[0].Seq != 9 || entries[1].Seq != 10 || string(entries[1].Payload) != string(big) || !complete {
		t.Fatalf("after a 30-byte message: Since(8) = %v complete=%v, want 9 and 10, complete", entries, complete)
	}
	if _, complete := h.Since(7); complete {
		t.Fatal("Since(7) complete, but message 8 was evicted")
	}
	if got := h.Before(0, 10); len(got) != 2 || got[0].Seq != 9 || got[1].Seq != 10 {
		t.Fatalf("Before(0, 10) = %v, want 9 and 10", got)
	}
}

// A message larger than the whole byte bound is not kept: a resume from
// before it is incomplete, and the history goes on with the next messages.
func TestHistoryOversizedPayload(t *testing.T) {
	h := rooms.NewMemoryHistory(100, 40)
	appendRange(h, 1, 3)
	huge := make([]byte, 41)
	for i := range huge {
		huge[i] = 'x'
	}
	h.Append(4, huge)
	for _, e := range h.Before(0, 100) {
		if e.Seq == 4 {
			t.Fatalf("a %d-byte payload was kept in a history of 40 bytes", len(huge))
		}
	}
	if entries, complete := h.Since(3); complete {
		t.Fatalf("Since(3) = %v complete, but message 4 was never held", entries)
	}
	appendRange(h, 5, 6)
	checkSince(t, h, 4, span(5, 6), true)
	if _, complete := h.Since(2); complete {
		t.Fatal("Since(2) complete, but message 4 was never held")
	}
	checkBefore(t, h, 0, 2, span(5, 6))
}

// Before pages backwards: the newest limit messages below before, in
// ascending order; before 0 means from the newest.
func TestHistoryBeforePages(t *testing.T) {
	h := rooms.NewMemoryHistory(100, 1<<20)
	appendRange(h, 1, 20)
	checkBefore(t, h, 0, 3, span(18, 20))
	checkBefore(t, h, 15, 5, span(10, 14))
	checkBefore(t, h, 10, 5, span(5, 9))
	checkBefore(t, h, 5, 5, span(1, 4))
	checkBefore(t, h, 2, 5, []uint64{1})
	checkBefore(t, h, 1, 5, nil)
	checkBefore(t, h, 21, 2, span(19, 20))   // before past the newest: from the newest
	checkBefore(t, h, 1000, 2, span(19, 20)) // likewise
	checkBefore(t, h, 0, 0, nil)
	checkBefore(t, h, 0, 50, span(1, 20)) // limit larger than held: all of it
	checkBefore(t, h, 7, 50, span(1, 6))

	// Walking back page by page visits every message once.
	var walked []uint64
	for before := uint64(0); ; {
		page := seqs(t, h.Before(before, 6))
		if len(page) == 0 {
			break
		}
		if len(walked) > 20 || (before > 0 && page[len(page)-1] >= before) {
			t.Fatalf("paging back from %d returned %v: not below it", before, page)
		}
		walked = append(page, walked...)
		before = page[0]
	}
	if !slices.Equal(walked, span(1, 20)) {
		t.Fatalf("paging back 6 at a time visited %v, want 1..20", walked)
	}
}

// Before over an evicted range returns only what is held: the oldest
// messages are gone, the page below them is empty.
func TestHistoryBeforeAfterEviction(t *testing.T) {
	h := rooms.NewMemoryHistory(5, 1<<20)
	appendRange(h, 1, 12)
	checkBefore(t, h, 0, 10, span(8, 12))
	checkBefore(t, h, 10, 10, span(8, 9))
	checkBefore(t, h, 8, 10, nil)
	checkBefore(t, h, 3, 10, nil)
}

// The ring wraps around many times and grows past its first size without
// losing order or content.
func TestHistoryRingWrapsAndGrows(t *testing.T) {
	for _, limit := range []int{1, 7, 16, 17, 100} {
		t.Run(fmt.Sprint(limit), func(t *testing.T) {
			h := rooms.NewMemoryHistory(limit, 1<<20)
			for last := uint64(1); last <= 250; last++ {
				h.Append(last, payloadOf(last))
				oldest := uint64(1)
				if last > uint64(limit) {
					oldest = last - uint64(limit) + 1
				}
				if got := seqs(t, h.Before(0, limit+5)); !slices.Equal(got, span(oldest, last)) {
					t.Fatalf("after %d appends: Before(0) = %v, want %d..%d", last, got, oldest, last)
				}
				if entries, complete := h.Since(oldest - 1); !complete || len(entries) != int(last-oldest+1) {
					t.Fatalf("after %d appends: Since(%d) = %d entries complete=%v", last, oldest-1, len(entries), complete)
				}
			}
		})
	}
}

// Unset bounds take the defaults: at least a thousand messages are kept.
func TestHistoryDefaults(t *testing.T) {
	if rooms.DefaultHistoryMessages < 1000 {
		t.Fatalf("DefaultHistoryMessages = %d, want at least 1000", rooms.DefaultHistoryMessages)
	}
	h := rooms.NewMemoryHistory(0, 0)
	n := uint64(rooms.DefaultHistoryMessages)
	appendRange(h, 1, n+500)
	checkSince(t, h, 500, span(501, n+500), true)
	checkSince(t, h, 499, span(501, n+500), false)
}

// Trim drops the oldest messages until Bytes is within the bound, keeps
// the newest, and reports a resume from before them incomplete; trimming
// to nothing gives the ring back.
func TestHistoryTrim(t *testing.T) {
	h := rooms.NewMemoryHistory(100, 1<<20)
	tr, ok := h.(rooms.Trimmer)
	if !ok {
		t.Fatal("the in-memory history does not implement rooms.Trimmer")
	}
	if n := tr.Bytes(); n != 0 {
		t.Fatalf("empty: Bytes = %d, want 0", n)
	}
	appendRange(h, 1, 30)
	full := tr.Bytes()
	payloads := 0
	for seq := uint64(1); seq <= 30; seq++ {
		payloads += len(payloadOf(seq))
	}
	if full <= payloads {
		t.Fatalf("Bytes = %d, want the payloads (%d) and the ring", full, payloads)
	}
	tr.Trim(full) // nothing to do
	checkSince(t, h, 0, span(1, 30), true)

	tr.Trim(full - 1)
	if n := tr.Bytes(); n > full-1 {
		t.Fatalf("Trim(%d): Bytes = %d", full-1, n)
	}
	checkSince(t, h, 0, span(2, 30), false)
	checkSince(t, h, 1, span(2, 30), true)

	tr.Trim(full / 4)
	if n := tr.Bytes(); n > full/4 || n == 0 {
		t.Fatalf("Trim(%d): Bytes = %d", full/4, n)
	}
	entries, complete := h.Since(0)
	kept := seqs(t, entries)
	if complete || len(kept) == 0 || kept[len(kept)-1] != 30 || !slices.Equal(kept, span(kept[0], 30)) {
		t.Fatalf("after Trim(%d): Since(0) = %v complete=%v, want the newest", full/4, kept, complete)
	}
	checkSince(t, h, kept[0]-1, kept, true)

	tr.Trim(0)
	if n := tr.Bytes(); n != 0 {
		t.Fatalf("Trim(0): Bytes = %d, want 0", n)
	}
	checkSince(t, h, 29, nil, false)
	checkSince(t, h, 30, nil, true)
	h.Append(31, payloadOf(31)) // and it goes on
	checkSince(t, h, 30, []uint64{31}, true)
	checkBefore(t, h, 0, 10, []uint64{31})
}
