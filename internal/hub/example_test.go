package hub_test

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/internal/session"
)

// Sessions here write to in-memory connections, so the example can show
// exactly what each client would receive.
func ExampleManager_Broadcast() {
	sys := session.NewSystem(nil)
	m := hub.New(sys, hub.Config{
		Encode: func(typ string, payload any) ([]byte, error) {
			return json.Marshal(map[string]any{"type": typ, "payload": payload})
		},
	})
	ctx := context.Background()

	alice, bob := session.NewMemConn(), session.NewMemConn()
	as := sys.NewSession(alice, session.Info{ID: "alice"}, session.Options{})
	bs := sys.NewSession(bob, session.Info{ID: "bob"}, session.Options{})

	// Join returns once the room has taken the member in, so the broadcast
	// right after it reaches both.
	_ = m.Join(ctx, "lobby", as)
	_ = m.Join(ctx, "lobby", bs)
	_ = m.Broadcast("lobby", "chat", "hello, lobby")

	for _, c := range []*session.MemConn{alice, bob} {
		c.WaitCount(1, 5*time.Second)
		fmt.Println(string(c.Frames()[0].Data))
	}
	members, _ := m.Members(ctx, "lobby")
	fmt.Println(len(members), "members:", members[0].ID(), members[1].ID())
	fmt.Println("rooms of alice:", m.RoomsOf(as))

	session.Finish(as, session.CloseNormal, "")
	session.Finish(bs, session.CloseNormal, "")
	_ = m.Shutdown(ctx)
	sys.Shutdown()
	// Output:
	// {"payload":"hello, lobby","type":"chat"}
	// {"payload":"hello, lobby","type":"chat"}
	// 2 members: alice bob
	// rooms of alice: [lobby]
}

// votes is room logic: it keeps a tally in its own fields, without locks,
// because the room calls it one message at a time.
type votes struct {
	hub.NopHandler
	yes, no int
}

func (v *votes) OnJoin(r *hub.Room, s *session.Session) {
	_ = r.Broadcast("welcome", fmt.Sprintf("%s joined, %d here", s.ID(), r.Len()))
}

func (v *votes) OnMessage(r *hub.Room, _ *session.Session, msg any) {
	if msg == "yes" {
		v.yes++
	} else {
		v.no++
	}
	_ = r.Broadcast("tally", map[string]int{"yes": v.yes, "no": v.no})
}

// Room logic is a Handler; Config.NewHandler makes one per room.
func ExampleHandler() {
	sys := session.NewSystem(nil)
	m := hub.New(sys, hub.Config{
		Encode: func(typ string, payload any) ([]byte, error) {
			return json.Marshal(map[string]any{"type": typ, "payload": payload})
		},
		NewHandler: func(room string) hub.Handler { return &votes{} },
	})
	ctx := context.Background()

	conn := session.NewMemConn()
	s := sys.NewSession(conn, session.Info{ID: "voter"}, session.Options{})
	_ = m.Join(ctx, "poll", s)
	// Deliver hands a message to the room's Handler, in the room's order.
	for _, v := range []string{"yes", "no", "yes"} {
		_ = m.Deliver("poll", s, v)
	}

	conn.WaitCount(4, 5*time.Second)
	for _, f := range conn.Frames() {
		fmt.Println(string(f.Data))
	}

	session.Finish(s, session.CloseNormal, "")
	_ = m.Shutdown(ctx)
	sys.Shutdown()
	// Output:
	// {"payload":"voter joined, 1 here","type":"welcome"}
	// {"payload":{"no":0,"yes":1},"type":"tally"}
	// {"payload":{"no":1,"yes":1},"type":"tally"}
	// {"payload":{"no":1,"yes":2},"type":"tally"}
}
