package e2e

import (
	"errors"
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

type tallyLogic struct {
	troupe.NopRoomHandler
	n int
}

func (l *tallyLogic) add(r *troupe.Room, from *troupe.Session, n int) (int, error) {
	if n <= 0 {
		return 0, troupe.NewError("invalid", "n must be positive")
	}
	l.n += n
	return l.n, nil
}

// TestRoomRequestIsAnsweredByTheRoom checks that RoomRequest reaches the
// room's own logic, which answers it, and that its errors come back as
// *client.Error.
func TestRoomRequestIsAnsweredByTheRoom(t *testing.T) {
	srv, url := serve(t, troupe.Config{NewRoomHandler: func(string) troupe.RoomHandler { return &tallyLogic{} }})
	troupe.HandleRoom(srv, "add", (*tallyLogic).add)
	ctx := ctxT(t)
	a, b := dial(t, []string{url}, nil).Room("t"), dial(t, []string{url}, nil).Room("t")
	var ce *client.Error
	if _, err := client.RoomRequest[int](ctx, a, "add", 1); !errors.As(err, &ce) || ce.Code != "not_member" {
		t.Fatalf("before joining: %v, want not_member", err)
	}
	for _, r := range []*client.Room{a, b} {
		if _, err := r.Join(ctx, nil); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := client.RoomRequest[int](ctx, a, "add", 2); err != nil || n != 2 {
		t.Fatalf("add 2: %d, %v", n, err)
	}
	if n, err := client.RoomRequest[int](ctx, b, "add", 3); err != nil || n != 5 {
		t.Fatalf("add 3 from the other member: %d, %v; want 5, the room's one count", n, err)
	}
	if _, err := client.RoomRequest[int](ctx, b, "add", 0); !errors.As(err, &ce) || ce.Code != "invalid" {
		t.Fatalf("a refused request: %v, want invalid", err)
	}
}
