package tests

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/troupehq/troupe"
)

type sayMsg struct {
	Room string `json:"room"`
	From int    `json:"from"`
	Seq  int    `json:"seq"`
}

// TestBroadcastKeepsEverySendersOrder checks that every member of a room
// receives every message broadcast to it, and that the messages of one
// sender arrive in the order that sender sent them, at every member, however
// the senders interleave.
func TestBroadcastKeepsEverySendersOrder(t *testing.T) {
	const senders, perSender, room = 8, 200, "order"
	h := startServer(t, troupe.Config{Settings: troupe.Settings{
		// Room for everything at once: this test is about order, not
		// about slow consumers.
		MaxQueuedMessages: 2 * senders * perSender,
	}})
	registerJoin(h.srv)
	troupe.Handle(h.srv, "say", func(c *troupe.Context, m sayMsg) error {
		return c.Server().Broadcast(m.Room, "said", m)
	})

	clients := make([]*client, senders)
	for i := range clients {
		clients[i] = h.dial(t, fmt.Sprintf("member-%d", i))
		clients[i].startReading()
		clients[i].join(t, room)
	}
	members, err := h.srv.Members(context.Background(), room)
	if err != nil || len(members) != senders {
		t.Fatalf("Members(%q) = %d sessions, %v; want %d", room, len(members), err, senders)
	}

	var wg sync.WaitGroup
	errs := make(chan error, senders)
	for i, c := range clients {
		frames := make([][]byte, perSender)
		for seq := range frames {
			frames[seq] = mustEnvelope(t, "say", sayMsg{Room: room, From: i, Seq: seq}, nil)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, f := range frames {
				if err := c.writeErr(f); err != nil {
					errs <- fmt.Errorf("%s: write: %w", c.name, err)
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

	for _, c := range clients {
		next := make([]int, senders) // next expected Seq from each sender
		for range senders * perSender {
			e := c.expect(t, "said")
			m := decodePayload[sayMsg](t, e)
			if m.From < 0 || m.From >= senders {
				t.Fatalf("%s: message from unknown sender %d", c.name, m.From)
			}
			if m.Seq != next[m.From] {
				t.Fatalf("%s: from sender %d got seq %d, want %d", c.name, m.From, m.Seq, next[m.From])
			}
			next[m.From]++
		}
		for from, n := range next {
			if n != perSender {
				t.Errorf("%s: %d messages from sender %d, want %d", c.name, n, from, perSender)
			}
		}
	}
}
