package hub_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/rooms"
)

// bigBody is a message body of about 10 KB: a room.message holding it
// costs its history about 10,045 bytes, and the first 16 messages of a
// room share a ring of 512 bytes.
var bigBody = `"` + strings.Repeat("x", 10000) + `"`

// publishSeen publishes body to room as mb and waits until the room has
// handled it (Members is answered by the room, behind the publish): the
// message is then counted into the budget.
func (f *protoFixture) publishSeen(room string, mb member, body string) {
	f.t.Helper()
	f.publish(room, mb, body, "")
	f.memberIDs(room)
}

// fill makes room with n messages of bigBody, published by mb, which
// stays a member.
func (f *protoFixture) fill(room string, mb member, n int) {
	f.t.Helper()
	f.join(room, mb, nil, "", "")
	for range n {
		f.publishSeen(room, mb, bigBody)
	}
}

// resume joins room as a new session asking for the messages after since,
// and returns room.joined's recovered flag and seq and the seqs resent.
func (f *protoFixture) resume(room string, since uint64) (recov bool, seq uint64, resent []uint64) {
	f.t.Helper()
	mb := f.session(fmt.Sprintf("resume-%s-%d-%d", room, since, time.Now().UnixNano()))
	f.join(room, mb, u64(since), "", "")
	fs := untilMarker(f.t, mb)
	j := as[joinedInfo](f.t, decodeProto(f.t, fs[0]), "room.joined")
	for _, fr := range fs[1:] {
		resent = append(resent, as[messageInfo](f.t, decodeProto(f.t, fr), "room.message").Seq)
	}
	return recovered(f.t, j), j.Seq, resent
}

// leaveDormant makes mb leave room and waits until the room is dormant.
func (f *protoFixture) leaveDormant(room string, mb member, dormant int) {
	f.t.Helper()
	f.leave(room, mb)
	eventually(f.t, fmt.Sprintf("%d dormant rooms", dormant), func() bool { return f.m.Stats().Dormant == dormant })
}

// Over the history budget, dormant rooms go first, oldest first, and only
// as many as it takes; then the longest live history loses its oldest
// messages, and a resume from before them is answered recovered: false,
// while shorter histories keep everything.
func TestHistoryBudgetEvictsDormantOldestFirstThenTrimsLongest(t *testing.T) {
	const budget = 100_000 // reclaims down to 93,750
	f := newProtoFixture(t, hub.Config{PresenceWindow: never, HistoryBudget: budget})
	a, b, c := f.session("a"), f.session("b"), f.session("c")

	f.fill("d1", a, 2) // about 20.6 KB each
	f.leaveDormant("d1", a, 1)
	f.fill("d2", a, 2)
	f.leaveDormant("d2", a, 2)
	f.fill("s", b, 1) // about 10.6 KB, live
	f.fill("l", c, 4) // about 40.7 KB, live: 92.5 KB in all
	if st := f.m.Stats(); st.EvictedBudget != 0 || st.Dormant != 2 || st.HistoryBytes > budget || st.HistoryBytes < 90_000 {
		t.Fatalf("under the budget: %+v", st)
	}

	// 102.5 KB: forgetting d1 (the oldest) is enough.
	f.publishSeen("l", c, bigBody)
	eventually(t, "a dormant room is forgotten", func() bool { return f.m.Stats().EvictedBudget == 1 })
	if st := f.m.Stats(); st.Dormant != 1 || st.Trims != 0 || st.HistoryBytes > budget {
		t.Fatalf("after the first reclaim: %+v", st)
	}
	if rec, seq, _ := f.resume("d1", 1); rec || seq != 0 {
		t.Errorf("d1 was the oldest dormant room: resume = recovered %v seq %d, want a new room", rec, seq)
	}
	if rec, seq, resent := f.resume("d2", 0); !rec || seq != 2 || !slices.Equal(resent, []uint64{1, 2}) {
		t.Errorf("d2 must be kept: resume = recovered %v seq %d resent %v", rec, seq, resent)
	}

	// Live now: l 50.7 KB, d2 20.6 KB, s 10.6 KB, d1 nothing; nothing is
	// dormant. Two more messages in l make 102 KB: l alone is cut, by its
	// oldest message.
	f.publishSeen("l", c, bigBody)
	if st := f.m.Stats(); st.Trims != 0 {
		t.Fatalf("trimmed under the budget: %+v", st)
	}
	f.publishSeen("l", c, bigBody)
	eventually(t, "a live history is trimmed", func() bool { return f.m.Stats().Trims == 1 })
	st := f.m.Stats()
	if st.HistoryBytes > budget || st.EvictedBudget != 1 || st.TrimmedBytes < 10_000 {
		t.Fatalf("after trimming: %+v", st)
	}
	if rec, seq, resent := f.resume("l", 0); rec || seq != 7 || !slices.Equal(resent, []uint64{2, 3, 4, 5, 6, 7}) {
		t.Errorf("l after the trim: resume from 0 = recovered %v seq %d resent %v, want false, 7, [2..7]", rec, seq, resent)
	}
	if rec, _, resent := f.resume("l", 1); !rec || len(resent) != 6 {
		t.Errorf("l after the trim: resume from 1 = recovered %v resent %v, want true and 6 messages", rec, resent)
	}
	for _, r := range []struct {
		room string
		n    uint64
	}{{"d2", 2}, {"s", 1}} {
		if rec, _, resent := f.resume(r.room, 0); !rec || uint64(len(resent)) != r.n {
			t.Errorf("%s is shorter than l and must keep everything: recovered %v resent %v", r.room, rec, resent)
		}
	}
}

// At most MaxDormant rooms are kept: the next one pushes out the oldest,
// however small the histories.
func TestMaxDormantForgetsTheOldest(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never, MaxDormant: 2})
	a := f.session("a")
	for i, room := range []string{"r1", "r2", "r3"} {
		f.join(room, a, nil, "", "")
		f.publishSeen(room, a, `"hi"`)
		f.leave(room, a)
		eventually(t, room+" dormant", func() bool {
			st := f.m.Stats()
			return st.Dormant == min(i+1, 2) && st.EvictedLimit == uint64(max(i-1, 0))
		})
	}
	if st := f.m.Stats(); st.Dormant != 2 || st.EvictedLimit != 1 || st.EvictedBudget != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if rec, seq, _ := f.resume("r1", 1); rec || seq != 0 {
		t.Errorf("r1 was the oldest: resume = recovered %v seq %d, want a new room", rec, seq)
	}
	for _, room := range []string{"r2", "r3"} {
		if rec, seq, _ := f.resume(room, 0); !rec || seq != 1 {
			t.Errorf("%s must be kept: resume = recovered %v seq %d", room, rec, seq)
		}
	}
}

// What a room's history holds is taken off the budget when the room is
// forgotten: the count does not creep up with rooms that come and go.
func TestHistoryBytesGoBackToZero(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never, Retention: -1})
	a := f.session("a")
	for i := range 20 {
		room := fmt.Sprint("r", i)
		f.fill(room, a, 1)
		if st := f.m.Stats(); st.HistoryBytes < 10_000 {
			t.Fatalf("a room with a 10 KB message: %+v", st)
		}
		f.leave(room, a)
		eventually(t, "the room is forgotten", func() bool { return f.m.Stats().HistoryBytes == 0 })
	}
	if st := f.m.Stats(); st.Dormant != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// plainHistory is a History without rooms.Trimmer, as a custom store may
// be.
type plainHistory struct{ rooms.History }

// A custom History that does not implement rooms.Trimmer counts as holding
// nothing: the budget never trims it, and resume works as before.
func TestHistoryBudgetLeavesCustomHistoryAlone(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never, HistoryBudget: 1000,
		NewHistory: func(string) rooms.History { return plainHistory{rooms.NewMemoryHistory(0, 0)} }})
	a := f.session("a")
	f.fill("r", a, 3)
	f.leaveDormant("r", a, 1)
	if st := f.m.Stats(); st.HistoryBytes != 0 || st.Trims != 0 || st.EvictedBudget != 0 {
		t.Fatalf("stats: %+v", st)
	}
	if rec, seq, resent := f.resume("r", 0); !rec || seq != 3 || len(resent) != 3 {
		t.Errorf("resume = recovered %v seq %d resent %v", rec, seq, resent)
	}
}

// A dormant room is forgotten when its retention ends even if no other
// room stops afterwards, so an idle server gives the memory back.
func TestDormantRoomsExpireWhenIdle(t *testing.T) {
	f := newProtoFixture(t, hub.Config{PresenceWindow: never, Retention: 200 * time.Millisecond})
	a := f.session("a")
	f.fill("r", a, 1)
	f.leaveDormant("r", a, 1)
	eventually(t, "the dormant room expires", func() bool {
		st := f.m.Stats()
		return st.Dormant == 0 && st.HistoryBytes == 0
	})
}

// The mids a room remembers count into the history budget: over it, a
// room forgets its oldest mids along with its oldest messages, and keeps
// the newest.
func TestHistoryBudgetCountsMids(t *testing.T) {
	const budget = 20_000
	f := newProtoFixture(t, hub.Config{PresenceWindow: never, HistoryBudget: budget})
	a := f.session("a")
	mid := func(i int) string { return fmt.Sprintf("mid-%056d", i) } // 60 bytes
	publishIn := func(room string, i int, withMid bool) {
		t.Helper()
		m := ""
		if withMid {
			m = mid(i)
		}
		if err := f.m.PublishOnce(room, a.s, json.RawMessage("1"), nil, m); err != nil {
			t.Fatal(err)
		}
		f.memberIDs(room) // handled
	}
	publish := func(i int) { t.Helper(); publishIn("m", i, true) }
	// The same 10 messages, without mids and with: the second room holds
	// their payloads' extra bytes (the "mid" field) and the memory's.
	f.join("plain", a, nil, "", "")
	f.join("m", a, nil, "", "")
	for i := range 10 {
		publishIn("plain", i, false)
	}
	plain := f.m.Stats().HistoryBytes
	for i := range 10 {
		publish(i)
	}
	if extra := f.m.Stats().HistoryBytes - 2*plain; extra < int64(10*(len(`,"mid":""`)+60+96)) {
		t.Fatalf("10 messages with mids count %d bytes more than without: the mids are not counted", extra)
	}
	for i := 10; i < 300; i++ {
		publish(i)
	}
	eventually(t, "the budget is kept", func() bool {
		st := f.m.Stats()
		return st.HistoryBytes <= budget && st.MidsEvictedBudget > 0
	})
	publish(299) // the newest mid is still known
	eventually(t, "the repeat is answered as a duplicate", func() bool { return f.m.Stats().Duplicates == 1 })
}
