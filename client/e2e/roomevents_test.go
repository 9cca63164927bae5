package e2e

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

// TestHandleRoomGetsTheRoomsOwnEvents checks that HandleRoom receives the
// application's events about its room (a server Broadcast of a custom type
// whose payload names the room), decoded, in order, and not those of
// another room.
func TestHandleRoomGetsTheRoomsOwnEvents(t *testing.T) {
	type bid struct {
		Room string `json:"room"`
		N    int    `json:"n"`
	}
	srv, url := serve(t, troupe.Config{})
	troupe.HandleRequest(srv, "cast", func(c *troupe.Context, b bid) (bool, error) {
		return true, c.Server().Broadcast(b.Room, "auction.bid", b)
	})
	c := dial(t, []string{url}, nil)
	ctx := ctxT(t)
	a, other := c.Room("a"), c.Room("b")
	if _, err := a.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got, gotOther []int
	client.HandleRoom(a, "auction.bid", func(b bid) { mu.Lock(); got = append(got, b.N); mu.Unlock() })
	client.HandleRoom(other, "auction.bid", func(b bid) { mu.Lock(); gotOther = append(gotOther, b.N); mu.Unlock() })
	for _, b := range []bid{{"a", 1}, {"b", 9}, {"a", 2}, {"a", 3}} {
		if _, err := client.Request[bool](ctx, c, "cast", b); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(wait)
	for {
		mu.Lock()
		done := len(got) == 3 && len(gotOther) == 1
		g, o := slices.Clone(got), slices.Clone(gotOther)
		mu.Unlock()
		if done {
			if !slices.Equal(g, []int{1, 2, 3}) || !slices.Equal(o, []int{9}) {
				t.Fatalf("room a got %v, room b %v; want [1 2 3] and [9]", g, o)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("room a got %v, room b %v; want [1 2 3] and [9]", g, o)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
