package e2e

import (
	"slices"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

// TestRoomCountedAbovePresenceLimit checks the client's side of counted
// presence on a server with PresenceLimit 4: a joiner beyond it gets the
// count and a first page, the members get the count (Count, Counted, a
// Presence with both) and no longer a list, the room stays counted at
// the limit, and at half of it every member gets the whole list again.
func TestRoomCountedAbovePresenceLimit(t *testing.T) {
	const limit = 4
	_, url := serve(t, troupe.Config{PresenceLimit: limit})
	ctx := ctxT(t)
	rooms := make([]*client.Room, 0, limit+1)
	presence := make(chan client.Presence, 64)
	for i := range limit + 1 {
		r := dial(t, []string{url}, nil).Room("big")
		j, err := r.Join(ctx, map[string]int{"n": i})
		if err != nil {
			t.Fatal(err)
		}
		if j.Count != i+1 {
			t.Fatalf("join %d: room.joined count %d, want %d", i+1, j.Count, i+1)
		}
		rooms = append(rooms, r)
		if i == 0 {
			r.OnPresence(func(p client.Presence) { presence <- p })
		}
	}
	ann := rooms[0]
	last := rooms[limit]
	if j, _ := last.Join(ctx, nil); j.Presence != "count" || j.Count != limit+1 || len(j.Members) != limit {
		t.Fatalf("the joiner beyond the limit: presence %q, count %d, %d members, want \"count\", %d and a page of %d", j.Presence, j.Count, len(j.Members), limit+1, limit)
	}
	if !last.Counted() || last.Count() != limit+1 {
		t.Fatalf("the joiner beyond the limit: Counted %v, Count %d", last.Counted(), last.Count())
	}

	awaitPresence := func(what string, ok func(client.Presence) bool) client.Presence {
		t.Helper()
		for {
			select {
			case p := <-presence:
				if ok(p) {
					return p
				}
			case <-time.After(wait):
				t.Fatalf("no presence with %s; ann has Count %d, Counted %v, members %v", what, ann.Count(), ann.Counted(), ann.Members())
			}
		}
	}
	awaitPresence("the room counted with 5", func(p client.Presence) bool { return p.Counted && p.Count == limit+1 })
	if !ann.Counted() || ann.Count() != limit+1 {
		t.Fatalf("ann: Counted %v, Count %d, want counted with %d", ann.Counted(), ann.Count(), limit+1)
	}

	// Down to the limit: still counted.
	for _, r := range rooms[limit-1:] {
		if err := r.Leave(ctx); err != nil {
			t.Fatal(err)
		}
	}
	awaitPresence("a count of 3", func(p client.Presence) bool { return p.Count == limit-1 })
	if !ann.Counted() {
		t.Fatal("ann: listed again at 3 members, want counted down to 2")
	}

	// Half the limit: the whole list again.
	if err := rooms[limit-2].Leave(ctx); err != nil {
		t.Fatal(err)
	}
	p := awaitPresence("the whole list", func(p client.Presence) bool { return p.Reset })
	var metas []string
	for _, m := range p.Members {
		metas = append(metas, string(m.Meta))
	}
	slices.Sort(metas)
	if want := []string{`{"n":0}`, `{"n":1}`}; p.Counted || p.Count != 2 || !slices.Equal(metas, want) {
		t.Fatalf("the list again: Counted %v, Count %d, members %v, want %v", p.Counted, p.Count, metas, want)
	}
	if ann.Counted() || ann.Count() != 2 || len(ann.Members()) != 2 {
		t.Fatalf("ann after the list: Counted %v, Count %d, members %v", ann.Counted(), ann.Count(), ann.Members())
	}

	// Diffs again.
	if _, err := dial(t, []string{url}, nil).Room("big").Join(ctx, map[string]int{"n": 9}); err != nil {
		t.Fatal(err)
	}
	p = awaitPresence("a join", func(p client.Presence) bool { return len(p.Joins) == 1 })
	if p.Counted || p.Count != 3 || string(p.Joins[0].Meta) != `{"n":9}` {
		t.Fatalf("a join after the list: %+v", p)
	}
}
