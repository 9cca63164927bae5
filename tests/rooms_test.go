package tests

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/troupehq/troupe"
)

type pubMsg struct {
	Room string `json:"room"`
	From int    `json:"from"`
	Seq  int    `json:"seq"`
}

type pokeMsg struct {
	Room string `json:"room"`
	From int    `json:"from"`
	N    int    `json:"n"`
}

type logicMsg struct {
	From  int `json:"from"`
	N     int `json:"n"`
	Count int `json:"count"` // messages this handler instance handled
}

// explodes reports whether the flaky room logic panics on poke n.
func explodes(n int) bool { return n%5 == 0 }

// flakyLogic is room logic that panics on some messages in the room "hot"
// and answers every other message with a broadcast. Count lives in the
// instance, so it shows whether the room was restarted.
type flakyLogic struct {
	troupe.NopRoomHandler
	room  string
	count int
}

func (l *flakyLogic) OnMessage(r *troupe.Room, _ *troupe.Session, msg any) {
	p := msg.(pokeMsg)
	if l.room == "hot" && explodes(p.N) {
		panic(fmt.Sprintf("poke %d from %d", p.N, p.From))
	}
	l.count++
	_ = r.Broadcast("logic", logicMsg{From: p.From, N: p.N, Count: l.count})
}

// TestRoomLogicPanicsUnderLoad checks that room logic that panics again and
// again while publishers broadcast to the room loses no member and no
// broadcast: the room restarts with the same members, every broadcast
// reaches every member in order, OnError hears of each panic, and other
// rooms do not notice.
func TestRoomLogicPanicsUnderLoad(t *testing.T) {
	const (
		publishers = 2
		rounds     = 300
	)
	var mu sync.Mutex
	instances := map[string]int{}
	h := startServer(t, troupe.Config{
		Settings: troupe.Settings{MaxQueuedMessages: 4 * publishers * rounds},
		// Restarted as often as it fails: this checks what a restart
		// keeps, not the restart intensity (roomlogic_test.go does).
		MaxRoomRestarts: -1,
		NewRoomHandler: func(room string) troupe.RoomHandler {
			mu.Lock()
			instances[room]++
			mu.Unlock()
			return &flakyLogic{room: room}
		},
	})
	registerJoin(h.srv)
	troupe.Handle(h.srv, "pub", func(c *troupe.Context, m pubMsg) error {
		return c.Server().Broadcast(m.Room, "pub", m)
	})
	troupe.Handle(h.srv, "poke", func(c *troupe.Context, m pokeMsg) error {
		return c.Server().DeliverToRoom(m.Room, c.Session(), m)
	})

	memberNames := map[string][]string{"hot": {"hot-0", "hot-1", "hot-2", "hot-3"}, "calm": {"calm-0", "calm-1"}}
	members := map[string][]*client{}
	for _, room := range []string{"hot", "calm"} {
		for _, name := range memberNames[room] {
			c := h.dial(t, name)
			c.startReading()
			c.join(t, room)
			members[room] = append(members[room], c)
		}
	}
	ctx := context.Background()
	before := map[string][]*troupe.Session{}
	for room := range members {
		list, err := h.srv.Members(ctx, room)
		if err != nil || len(list) != len(members[room]) {
			t.Fatalf("Members(%q) = %d, %v", room, len(list), err)
		}
		before[room] = list
	}

	pubs := make([]*client, publishers)
	for i := range pubs {
		pubs[i] = h.dial(t, fmt.Sprintf("publisher-%d", i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, publishers)
	for i, p := range pubs {
		var frames [][]byte
		for n := range rounds {
			for _, room := range []string{"hot", "calm"} {
				frames = append(frames,
					mustEnvelope(t, "pub", pubMsg{Room: room, From: i, Seq: n}, nil),
					mustEnvelope(t, "poke", pokeMsg{Room: room, From: i, N: n}, nil))
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range frames {
				if err := p.writeErr(f); err != nil {
					errs <- fmt.Errorf("%s: %w", p.name, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	panics := 0
	for n := range rounds {
		if explodes(n) {
			panics += publishers
		}
	}
	for room, cs := range members {
		for _, c := range cs {
			nextPub := make([]int, publishers)
			nextPoke := make([]int, publishers)
			lastCount := 0
			want := publishers * rounds * 2
			if room == "hot" {
				want -= panics
			}
			for range want {
				e := c.nextEnvelope(t)
				switch e.Type {
				case "pub":
					m := decodePayload[pubMsg](t, e)
					if m.Room != room || m.Seq != nextPub[m.From] {
						t.Fatalf("%s: pub %+v, want seq %d of room %s", c.name, m, nextPub[m.From], room)
					}
					nextPub[m.From]++
				case "logic":
					m := decodePayload[logicMsg](t, e)
					if room == "hot" && explodes(nextPoke[m.From]) {
						nextPoke[m.From]++ // that one blew up: no answer
					}
					if m.N != nextPoke[m.From] {
						t.Fatalf("%s: answer to poke %d from %d, want %d", c.name, m.N, m.From, nextPoke[m.From])
					}
					nextPoke[m.From]++
					if room == "calm" && m.Count != lastCount+1 {
						t.Fatalf("%s: calm logic count %d after %d: its state was lost", c.name, m.Count, lastCount)
					}
					lastCount = m.Count
				default:
					t.Fatalf("%s: unexpected %q", c.name, e.Type)
				}
			}
			for from := range publishers {
				if nextPub[from] != rounds {
					t.Errorf("%s: %d broadcasts from publisher %d, want %d", c.name, nextPub[from], from, rounds)
				}
			}
		}
	}

	// OnError hears of every panic, as a room error (no session).
	h.rec.waitFor(t, "OnError for every panic", func() bool { return len(h.rec.errs) >= panics })
	for _, err := range h.rec.errorsOf(nil) {
		var pe *troupe.PanicError
		if !errors.As(err, &pe) || pe.Room != "hot" {
			t.Errorf("OnError: %v, want a panic of room hot", err)
		}
	}
	if got := len(h.rec.errorsOf(nil)); got != panics {
		t.Errorf("OnError told of %d room panics, want %d", got, panics)
	}

	for room, list := range before {
		after, err := h.srv.Members(ctx, room)
		if err != nil {
			t.Fatalf("Members(%q): %v", room, err)
		}
		if len(after) != len(list) {
			t.Fatalf("room %s: %d members after the panics, want %d", room, len(after), len(list))
		}
		for i := range list {
			if after[i] != list[i] {
				t.Errorf("room %s: member %d changed", room, i)
			}
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if instances["calm"] != 1 {
		t.Errorf("calm room logic created %d times, want once", instances["calm"])
	}
	if instances["hot"] != 1+panics {
		t.Errorf("hot room logic created %d times, want %d (once, then once per panic)", instances["hot"], 1+panics)
	}
}
