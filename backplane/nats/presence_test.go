package nats

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/troupehq/troupe/rooms"
)

// presenceEvent is one call of a WatchPresence fn.
type presenceEvent struct {
	node    string
	members []rooms.PresenceEntry
}

func watchRoom(t *testing.T, b *Backplane, room string) <-chan presenceEvent {
	t.Helper()
	ch := make(chan presenceEvent, 100)
	stop, err := b.WatchPresence(room, func(node string, members []rooms.PresenceEntry) {
		ch <- presenceEvent{node, members}
	})
	if err != nil {
		t.Fatalf("WatchPresence: %v", err)
	}
	t.Cleanup(stop)
	return ch
}

func next(t *testing.T, ch <-chan presenceEvent) presenceEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(wait):
		t.Fatal("no presence event")
		return presenceEvent{}
	}
}

func members(keys ...string) []rooms.PresenceEntry {
	out := make([]rooms.PresenceEntry, len(keys))
	for i, k := range keys {
		out[i] = rooms.PresenceEntry{Key: k, Entry: json.RawMessage(fmt.Sprintf(`{"id":%q}`, "user-"+k))}
	}
	return out
}

func keysOf(ms []rooms.PresenceEntry) []string {
	var out []string
	for _, m := range ms {
		out = append(out, m.Key)
	}
	return out
}

func expectList(t *testing.T, ev presenceEvent, node string, keys ...string) {
	t.Helper()
	got := keysOf(ev.members)
	if ev.node != node || fmt.Sprint(got) != fmt.Sprint(keys) || (len(keys) == 0) != (ev.members == nil) {
		t.Fatalf("presence event (%q, %v), want (%q, %v)", ev.node, got, node, keys)
	}
	for _, m := range ev.members {
		if string(m.Entry) != fmt.Sprintf(`{"id":%q}`, "user-"+m.Key) {
			t.Fatalf("member %s arrived as %s", m.Key, m.Entry)
		}
	}
}

// slow makes the periodic repeat too rare to explain anything a test sees.
func slow(o *Options) { o.PresenceInterval = time.Hour }

func TestPresenceChangesReachOtherNodesOnly(t *testing.T) {
	a := openSolo(t, slow)
	b := openPeer(t, a.Server(), "b", slow)
	events := watchRoom(t, b, "lobby")
	otherRoom := watchRoom(t, b, "other")

	// b's own list must not come back to b: it is sent, and flushed, before
	// a's, so it would arrive first.
	if err := b.Announce("lobby", members("b1")); err != nil {
		t.Fatal(err)
	}
	if err := b.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := a.Announce("lobby", members("a1")); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, events), "a", "a1")
	if err := a.Announce("lobby", members("a1", "a2")); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, events), "a", "a1", "a2")
	if err := a.Announce("lobby", nil); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, events), "a")

	if err := a.Announce("other", members("o1")); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, otherRoom), "a", "o1")
	select {
	case ev := <-events:
		t.Fatalf("lobby watch got %v from another room", ev)
	default:
	}
}

// A watch that begins after the others announced learns their lists
// without waiting for their next repeat.
func TestPresenceWatchStartedLateLearnsListsAtOnce(t *testing.T) {
	a := openSolo(t, slow)
	b := openPeer(t, a.Server(), "b", slow)
	c := openPeer(t, a.Server(), "c", slow)
	if err := a.Announce("lobby", members("a1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Announce("lobby", members("c1", "c2")); err != nil {
		t.Fatal(err)
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := c.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	events := watchRoom(t, b, "lobby")
	got := map[string][]string{}
	for range 2 {
		ev := next(t, events)
		got[ev.node] = keysOf(ev.members)
	}
	if fmt.Sprint(got) != fmt.Sprint(map[string][]string{"a": {"a1"}, "c": {"c1", "c2"}}) {
		t.Fatalf("late watch learned %v", got)
	}
}

// A node that closes withdraws its lists: the others drop its members at
// once, long before its TTL.
func TestPresenceCloseWithdrawsLists(t *testing.T) {
	// b runs the server, as a must be able to leave without taking it away.
	b := openSolo(t, func(o *Options) { slow(o); o.Embedded.Name = "b" })
	a := openPeer(t, b.Server(), "a", slow)
	events := watchRoom(t, b, "lobby")
	if err := a.Announce("lobby", members("a1")); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, events), "a", "a1")
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, events), "a")
}

// A node that goes silent without withdrawing (a crash) expires after the
// TTL; a node that keeps repeating its list does not.
func TestPresenceExpiresSilentNode(t *testing.T) {
	quick := func(o *Options) {
		o.PresenceInterval = 20 * time.Millisecond
		o.PresenceTTL = 300 * time.Millisecond
	}
	a := openSolo(t, quick)
	b := openPeer(t, a.Server(), "b", quick)
	events := watchRoom(t, b, "lobby")
	if err := a.Announce("lobby", members("a1")); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, events), "a", "a1")

	// A crashed node: one announcement, never repeated, never withdrawn.
	data, _ := json.Marshal(announcement{Node: "ghost", Members: members("g1")})
	if err := a.nc.Publish(presencePrefix+roomToken("lobby"), data); err != nil {
		t.Fatal(err)
	}
	expectList(t, next(t, events), "ghost", "g1")
	expectList(t, next(t, events), "ghost")
	// a kept repeating and is still there: its list neither expired nor
	// was passed again, though it was heard many times since.
	select {
	case ev := <-events:
		t.Fatalf("unexpected presence event %v", ev)
	default:
	}
}
