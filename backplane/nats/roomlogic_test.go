package nats_test

import (
	"testing"

	"github.com/troupehq/troupe"
)

// herald is room logic that publishes into its room's stream on request.
type herald struct{ troupe.NopRoomHandler }

type heraldNotice struct {
	Room string `json:"room"`
	Text string `json:"text"`
}

func (herald) announce(_ herald, r *troupe.Room, _ *troupe.Session, m heraldNotice) (bool, error) {
	return true, r.Publish("notice", m.Text)
}

// TestRoomLogicPublishesThroughTheLog checks that a message the room's
// logic publishes on one node goes through the room's log like a member's:
// the next seq, on the members of every node, in the one order.
func TestRoomLogicPublishesThroughTheLog(t *testing.T) {
	urls, _ := startNodesServing(t, nil, &serving{
		config: func(c *troupe.Config) {
			c.NewRoomHandler = func(string) troupe.RoomHandler { return herald{} }
		},
		handlers: func(srv *troupe.Server) { troupe.HandleRoom(srv, "announce", herald{}.announce) },
	})
	a, b := dialClient(t, urls[0], "a"), dialClient(t, urls[1], "b")
	a.join(t, "logic", nil, "")
	b.join(t, "logic", nil, "")
	a.send(t, "room.publish", "p1", map[string]any{"room": "logic", "body": "member"})
	if e := a.answer(t, "p1"); e.Type != "room.published" {
		t.Fatalf("publish answered %s %s", e.Type, e.Payload)
	}
	b.send(t, "announce", "n1", heraldNotice{Room: "logic", Text: "from the room"})
	if e := b.answer(t, "n1"); e.Type != "reply" {
		t.Fatalf("announce answered %s %s", e.Type, e.Payload)
	}
	for _, c := range []*wsClient{a, b} {
		c.wait(t, "two messages", func() bool { return len(c.msgs) >= 2 })
		msgs := c.messages()
		if len(msgs) != 2 || msgs[0].Seq != 1 || msgs[1].Seq != 2 || msgs[1].Type != "notice" || msgs[1].From != "" || string(msgs[1].Body) != `"from the room"` {
			t.Fatalf("%s got %+v, want the member's message then the room's as seq 2", c.name, msgs)
		}
	}
}
