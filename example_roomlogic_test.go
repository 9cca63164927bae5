package troupe_test

import (
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
)

// counter is a room's logic: its count is the room's state.
type counter struct {
	troupe.NopRoomHandler
	n int
}

type add struct {
	N int `json:"n"`
}

// add runs inside the room's actor; what it returns answers the request.
func (c *counter) add(r *troupe.Room, from *troupe.Session, m add) (int, error) {
	if m.N <= 0 {
		return 0, troupe.NewError("invalid", "n must be positive")
	}
	c.n += m.N
	// Into the room's numbered stream, for every member.
	return c.n, r.Publish("counter.added", map[string]any{"by": r.MemberID(from), "n": c.n})
}

// Keep the count across a restart and while the room is empty.
func (c *counter) Snapshot() any     { return c.n }
func (c *counter) Restore(state any) { c.n = state.(int) }

func ExampleHandleRoom() {
	srv, err := troupe.New(troupe.Config{
		RoomProtocol:   true,
		NewRoomHandler: func(string) troupe.RoomHandler { return &counter{} },
		Authorize:      func(*http.Request) (string, error) { return "ann", nil },
	})
	if err != nil {
		log.Fatal(err)
	}
	troupe.HandleRoom(srv, "add", (*counter).add)
	ts := httptest.NewServer(srv)
	defer stop(srv, ts)

	conn := dial(ts.URL)
	defer conn.Close(websocket.StatusNormalClosure, "")
	send(conn, `{"type":"room.join","id":1,"payload":{"room":"tally"}}`)
	receive(conn) // room.joined
	send(conn, `{"type":"add","room":"tally","id":2,"payload":{"n":5}}`)
	fmt.Println(receive(conn))
	fmt.Println(receive(conn))
	send(conn, `{"type":"add","room":"tally","id":3,"payload":{"n":0}}`)
	fmt.Println(receive(conn))
	// Output:
	// {"type":"room.message","payload":{"room":"tally","seq":1,"type":"counter.added","body":{"by":"ann","n":5}}}
	// {"type":"reply","payload":5,"id":2}
	// {"type":"error","payload":{"code":"invalid","message":"n must be positive"},"id":3}
}
