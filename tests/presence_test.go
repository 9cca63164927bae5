package tests

import (
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/troupehq/troupe"
)

// Presence in large rooms: above Config.PresenceLimit members a room
// counts them instead of listing them (see the README's "Presence").

// framesSince returns the types of the frames of room that p took in
// after the first mark of them.
func framesSince(p *peer, room string, mark int) []string {
	return slices.Clone(p.view(room).frames[mark:])
}

// waitCount takes in p's frames until its view of room is counted with
// count n.
func waitCount(t *testing.T, p *peer, room string, n int) {
	t.Helper()
	for v := p.view(room); !v.counted || v.count != n; {
		p.pump(t)
	}
}

// memberIDs are the ids of a list of members, in its order.
func memberIDs(list []presenceEntry) []string {
	out := make([]string, 0, len(list))
	for _, m := range list {
		out = append(out, m.ID)
	}
	return out
}

// TestPresenceCountedAboveLimit checks the two presence modes with a
// limit of 6: listed up to it; above it room.joined carries the count and
// a first page, and the members get presence.count, never presence.diff;
// at the limit the room stays counted (hysteresis), at half of it every
// member gets presence.list with exactly the members, and diffs resume.
// Each switch reaches every member before the next room.message.
func TestPresenceCountedAboveLimit(t *testing.T) {
	const room, limit = "big", 6
	h := startServer(t, troupe.Config{
		RoomProtocol:  true,
		PresenceLimit: limit,
		Authorize:     func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil },
	})
	var in []*peer // the members, in join order
	join := func(i int) joinedPayload {
		t.Helper()
		p := h.dialPeer(t, fmt.Sprint("p", i), fmt.Sprint("user-", i))
		j := p.joinRoom(t, room, nil, nil)
		in = append(in, p)
		if j.Count == nil || *j.Count != len(in) {
			t.Fatalf("%s: room.joined count %v, want %d", p.name, deref(j.Count), len(in))
		}
		return j
	}
	leave := func(p *peer) {
		t.Helper()
		p.leaveRoom(t, room)
		in = slices.DeleteFunc(in, func(q *peer) bool { return q == p })
	}
	// publish has the first member publish and every member take in
	// frames up to that message; it returns, by member, where its frames
	// stood before.
	publish := func(step string) map[*peer]int {
		t.Helper()
		mark := map[*peer]int{}
		for _, p := range in {
			mark[p] = len(p.view(room).frames)
		}
		seq := in[0].publish(t, room, step)
		for _, p := range in {
			p.waitSeq(t, room, seq)
			if s := p.view(room).strangers; len(s) > 0 {
				t.Fatalf("%s: %s got messages from %v before being told of them", step, p.name, s)
			}
		}
		return mark
	}
	ids := func(ps []*peer) []string {
		out := make([]string, 0, len(ps))
		for _, p := range ps {
			out = append(out, p.memberID())
		}
		return out
	}

	// Up to the limit: listed.
	for i := range limit {
		if j := join(i); j.Presence != "" || !slices.Equal(memberIDs(j.Members), ids(in)) {
			t.Fatalf("join %d of %d: room.joined presence %q, members %v, want listed %v", i+1, limit, j.Presence, memberIDs(j.Members), ids(in))
		}
	}
	publish("listed")

	// One more: counted. The joiner's list is a first page, as long as
	// the limit; the members get presence.count, before the next message
	// and without a diff.
	before := slices.Clone(in)
	j := join(limit)
	if j.Presence != "count" || !slices.Equal(memberIDs(j.Members), ids(before)) {
		t.Fatalf("join beyond the limit: room.joined presence %q, members %v, want \"count\" and the page %v", j.Presence, memberIDs(j.Members), ids(before))
	}
	mark := publish("counted")
	for _, p := range before {
		if got := framesSince(p, room, mark[p]); !slices.Equal(got, []string{"presence.count", "room.message"}) {
			t.Errorf("%s: at the switch to counted got %v, want presence.count then the message", p.name, got)
		}
		if v := p.view(room); !v.counted || v.count != limit+1 {
			t.Errorf("%s: counted %v, count %d, want counted with %d", p.name, v.counted, v.count, limit+1)
		}
	}

	// Another join: one presence.count to every member within the window
	// (one shared frame: the joiner, whose room.joined told the count,
	// gets it too).
	counted := map[*peer]int{}
	for _, p := range in {
		counted[p] = len(p.view(room).frames)
	}
	join(limit + 1)
	for _, p := range in[:len(in)-1] {
		waitCount(t, p, room, limit+2)
	}
	joiner := in[len(in)-1]
	publish("counted, one more")
	for _, p := range in {
		want := []string{"presence.count", "room.message"}
		if p == joiner {
			want = []string{"room.joined", "presence.count", "room.message"}
		}
		if got := framesSince(p, room, counted[p]); !slices.Equal(got, want) {
			t.Errorf("%s: for a join while counted got %v, want %v", p.name, got, want)
		}
	}

	// Back to the limit: still counted (it lists again at half of it).
	leave(in[len(in)-1])
	leave(in[len(in)-1])
	for _, p := range in {
		waitCount(t, p, room, limit)
	}
	publish("at the limit")
	for _, p := range in {
		if got := framesSince(p, room, counted[p]); slices.Contains(got, "presence.diff") || slices.Contains(got, "presence.list") {
			t.Errorf("%s: while the room was counted got %v, want no presence.diff nor presence.list", p.name, got)
		}
		if v := p.view(room); !v.counted {
			t.Errorf("%s: listed again at the limit, want counted down to %d", p.name, limit/2)
		}
	}

	// Down to half the limit: listed again, every member told every
	// member, before the next message.
	for len(in) > limit/2 {
		leave(in[len(in)-1])
	}
	mark = publish("listed again")
	for _, p := range in {
		got := framesSince(p, room, mark[p])
		if len(got) < 2 || !slices.Equal(got[len(got)-2:], []string{"presence.list", "room.message"}) || slices.Contains(got, "presence.diff") {
			t.Errorf("%s: going back to listed got %v, want presence.count frames at most, then presence.list, then the message", p.name, got)
		}
		if v := p.view(room); v.counted || v.count != limit/2 || !slices.Equal(memberIDs(v.members), ids(in)) {
			t.Errorf("%s: after presence.list counted %v, count %d, members %v, want listed %v", p.name, v.counted, v.count, memberIDs(v.members), ids(in))
		}
	}

	// Diffs resume.
	before = slices.Clone(in)
	if j := join(9); j.Presence != "" || len(j.Members) != len(in) {
		t.Fatalf("join after going back to listed: room.joined presence %q, members %v, want every member", j.Presence, memberIDs(j.Members))
	}
	mark = publish("diffs again")
	for _, p := range before {
		if got := framesSince(p, room, mark[p]); !slices.Equal(got, []string{"presence.diff", "room.message"}) {
			t.Errorf("%s: a join in a listed room again got %v, want presence.diff then the message", p.name, got)
		}
		if got := p.view(room).ids(); !slices.Equal(got, sorted(ids(in))) {
			t.Errorf("%s: members %v, want %v", p.name, got, sorted(ids(in)))
		}
	}
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}

// TestClusterPresenceCounted checks counted mode across two nodes with a
// limit of 4: the members of the other node count, so a node whose own
// member is alone switches when the room as a whole passes the limit, and
// both nodes list again, each member with both nodes' members, once the
// room falls to half of it.
func TestClusterPresenceCounted(t *testing.T) {
	const room, limit = "big", 4
	servers, _ := startCluster(t, 2, 100, func(c *troupe.Config) { c.PresenceLimit = limit })
	a := servers[0].dialPeer(t, "a", "alice")
	a.joinRoom(t, room, nil, nil)
	var far []*peer // on the other node
	for i := range limit {
		p := servers[1].dialPeer(t, fmt.Sprint("far", i), fmt.Sprint("far-", i))
		j := p.joinRoom(t, room, nil, nil)
		far = append(far, p)
		if i == limit-1 && (j.Presence != "count" || j.Count == nil || *j.Count != limit+1) {
			t.Fatalf("join %d across nodes: room.joined presence %q, count %v, want counted with %d", limit+1, j.Presence, deref(j.Count), limit+1)
		}
	}
	// alice, alone on her node, is told the room's count.
	waitCount(t, a, room, limit+1)
	for _, p := range far {
		waitCount(t, p, room, limit+1)
	}

	// Down to half the limit: listed again on both nodes, with both.
	for _, p := range far[1:] {
		p.leaveRoom(t, room)
	}
	want := []string{"alice", "far-0"}
	for _, p := range []*peer{a, far[0]} {
		waitMembers(t, p, room, want)
		for v := p.view(room); v.counted; {
			p.pump(t)
		}
		if v := p.view(room); v.count != 2 || v.frames[len(v.frames)-1] != "presence.list" {
			t.Errorf("%s: back to listed: count %d, last frame %s, want 2 and presence.list", p.name, v.count, v.frames[len(v.frames)-1])
		}
	}

	// Diffs resume across nodes.
	c := servers[0].dialPeer(t, "c", "carol")
	c.joinRoom(t, room, nil, nil)
	waitMembers(t, far[0], room, []string{"alice", "carol", "far-0"})
	if v := far[0].view(room); v.frames[len(v.frames)-1] != "presence.diff" {
		t.Errorf("far-0: carol's join came as %s, want presence.diff", v.frames[len(v.frames)-1])
	}
}

// deref shows what a pointer from a decoded payload holds ("<nil>" if nothing).
func deref[T any](p *T) any {
	if p == nil {
		return nil
	}
	return *p
}

// TestPresenceLimitOfOneListsAgain: with a limit of 1, half the limit is
// no member at all; a room counted at two members lists again once one is
// left, rather than staying counted until it empties.
func TestPresenceLimitOfOneListsAgain(t *testing.T) {
	const room = "pair"
	h := startServer(t, troupe.Config{
		RoomProtocol:  true,
		PresenceLimit: 1,
		Authorize:     func(r *http.Request) (string, error) { return r.Header.Get("X-User"), nil },
	})
	a := h.dialPeer(t, "a", "user-a")
	a.joinRoom(t, room, nil, nil)
	b := h.dialPeer(t, "b", "user-b")
	if j := b.joinRoom(t, room, nil, nil); j.Presence != "count" {
		t.Fatalf("second member: room.joined presence %q, want count", j.Presence)
	}
	waitCount(t, a, room, 2)
	mark := len(a.view(room).frames)
	b.leaveRoom(t, room)
	a.waitSeq(t, room, a.publish(t, room, "alone"))
	if got := framesSince(a, room, mark); !slices.Contains(got, "presence.list") {
		t.Fatalf("the member left alone got %v, want presence.list before the message", got)
	}
	if v := a.view(room); v.counted {
		t.Error("the room of one member is still counted")
	}
}
