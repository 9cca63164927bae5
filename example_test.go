package troupe_test

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
)

func ExampleNew() {
	srv, err := troupe.New(troupe.Config{
		// Every text message goes to OnMessage as it is, no envelopes.
		RawMessages: true,
		OnMessage: func(s *troupe.Session, text []byte) {
			_ = s.SendText(append([]byte("echo: "), text...))
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/ws", srv)
	ts := httptest.NewServer(mux)
	defer stop(srv, ts)

	conn := dial(ts.URL + "/ws")
	defer conn.Close(websocket.StatusNormalClosure, "")
	send(conn, "hello")
	fmt.Println(receive(conn))
	// Output: echo: hello
}

func ExampleHandle() {
	srv, err := troupe.New(troupe.Config{})
	if err != nil {
		log.Fatal(err)
	}
	type greet struct {
		Name string `json:"name"`
	}
	troupe.Handle(srv, "greet", func(c *troupe.Context, m greet) error {
		if m.Name == "" {
			// The client gets an error envelope with this code, and
			// the id of its request.
			return troupe.NewError("invalid", "name is required")
		}
		return c.Reply("greeting", map[string]string{"text": "hello, " + m.Name})
	})
	ts := httptest.NewServer(srv)
	defer stop(srv, ts)

	conn := dial(ts.URL)
	defer conn.Close(websocket.StatusNormalClosure, "")
	send(conn, `{"type":"greet","payload":{"name":"Ada"},"id":1}`)
	fmt.Println(receive(conn))
	send(conn, `{"type":"greet","payload":{},"id":2}`)
	fmt.Println(receive(conn))
	send(conn, `{"type":"wave","id":3}`)
	fmt.Println(receive(conn))
	// Output:
	// {"type":"greeting","payload":{"text":"hello, Ada"},"id":1}
	// {"type":"error","payload":{"code":"invalid","message":"name is required"},"id":2}
	// {"type":"error","payload":{"code":"unknown_type","message":"no handler for type \"wave\""},"id":3}
}

func ExampleServer_Broadcast() {
	srv, err := troupe.New(troupe.Config{})
	if err != nil {
		log.Fatal(err)
	}
	type join struct {
		Room string `json:"room"`
	}
	type say struct {
		Room string `json:"room"`
		Text string `json:"text"`
	}
	troupe.Handle(srv, "join", func(c *troupe.Context, m join) error {
		// Join returns once the session is a member: whatever is
		// broadcast to the room from now on reaches it.
		if err := c.Join(m.Room); err != nil {
			return err
		}
		return c.Reply("joined", m)
	})
	troupe.Handle(srv, "say", func(c *troupe.Context, m say) error {
		return c.Server().Broadcast(m.Room, "said", m)
	})
	ts := httptest.NewServer(srv)
	defer stop(srv, ts)

	alice, bob, carol := dial(ts.URL), dial(ts.URL), dial(ts.URL)
	for _, c := range []*websocket.Conn{alice, bob, carol} {
		defer c.Close(websocket.StatusNormalClosure, "")
	}
	send(alice, `{"type":"join","payload":{"room":"lobby"}}`)
	fmt.Println("alice:", receive(alice))
	send(bob, `{"type":"join","payload":{"room":"lobby"}}`)
	fmt.Println("bob:", receive(bob))
	send(carol, `{"type":"join","payload":{"room":"kitchen"}}`)
	fmt.Println("carol:", receive(carol))

	send(bob, `{"type":"say","payload":{"room":"lobby","text":"hi all"}}`)
	fmt.Println("alice:", receive(alice))
	fmt.Println("bob:", receive(bob))

	// carol is in another room: the next thing she hears is from her own.
	send(carol, `{"type":"say","payload":{"room":"kitchen","text":"anyone?"}}`)
	fmt.Println("carol:", receive(carol))
	// Output:
	// alice: {"type":"joined","payload":{"room":"lobby"}}
	// bob: {"type":"joined","payload":{"room":"lobby"}}
	// carol: {"type":"joined","payload":{"room":"kitchen"}}
	// alice: {"type":"said","payload":{"room":"lobby","text":"hi all"}}
	// bob: {"type":"said","payload":{"room":"lobby","text":"hi all"}}
	// carol: {"type":"said","payload":{"room":"kitchen","text":"anyone?"}}
}

// poll is room logic: it runs inside the room actor, one call at a time, so
// it keeps its tally in a plain map.
type poll struct {
	troupe.NopRoomHandler
	votes map[string]int
}

// OnJoin tells everyone in the room how many they are now.
func (p *poll) OnJoin(r *troupe.Room, s *troupe.Session) {
	_ = r.Broadcast("members", r.Len())
}

// OnMessage counts a vote handed over by Server.DeliverToRoom.
func (p *poll) OnMessage(r *troupe.Room, from *troupe.Session, msg any) {
	p.votes[msg.(string)]++
	_ = r.Broadcast("tally", p.votes)
}

func ExampleConfig_NewRoomHandler() {
	srv, err := troupe.New(troupe.Config{
		NewRoomHandler: func(room string) troupe.RoomHandler {
			return &poll{votes: map[string]int{}}
		},
	})
	if err != nil {
		log.Fatal(err)
	}
	type join struct {
		Room string `json:"room"`
	}
	type vote struct {
		Room   string `json:"room"`
		Choice string `json:"choice"`
	}
	troupe.Handle(srv, "join", func(c *troupe.Context, m join) error {
		return c.Join(m.Room) // the room's OnJoin announces the newcomer
	})
	troupe.Handle(srv, "vote", func(c *troupe.Context, m vote) error {
		// The vote is counted inside the room, in order with its joins
		// and leaves.
		return c.Server().DeliverToRoom(m.Room, c.Session(), m.Choice)
	})
	ts := httptest.NewServer(srv)
	defer stop(srv, ts)

	alice, bob := dial(ts.URL), dial(ts.URL)
	defer alice.Close(websocket.StatusNormalClosure, "")
	defer bob.Close(websocket.StatusNormalClosure, "")
	send(alice, `{"type":"join","payload":{"room":"lunch"}}`)
	fmt.Println("alice:", receive(alice))
	send(bob, `{"type":"join","payload":{"room":"lunch"}}`)
	fmt.Println("alice:", receive(alice))
	fmt.Println("bob:", receive(bob))

	send(alice, `{"type":"vote","payload":{"room":"lunch","choice":"pizza"}}`)
	fmt.Println("bob:", receive(bob))
	send(bob, `{"type":"vote","payload":{"room":"lunch","choice":"sushi"}}`)
	fmt.Println("bob:", receive(bob))
	fmt.Println("alice:", receive(alice))
	fmt.Println("alice:", receive(alice))
	// Output:
	// alice: {"type":"members","payload":1}
	// alice: {"type":"members","payload":2}
	// bob: {"type":"members","payload":2}
	// bob: {"type":"tally","payload":{"pizza":1}}
	// bob: {"type":"tally","payload":{"pizza":1,"sushi":1}}
	// alice: {"type":"tally","payload":{"pizza":1}}
	// alice: {"type":"tally","payload":{"pizza":1,"sushi":1}}
}

// dial connects a WebSocket client to an httptest server's URL.
func dial(url string) *websocket.Conn {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	conn, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(url, "http"), nil)
	if err != nil {
		log.Fatal(err)
	}
	return conn
}

func send(conn *websocket.Conn, text string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := conn.Write(ctx, websocket.MessageText, []byte(text)); err != nil {
		log.Fatal(err)
	}
}

// receive returns the next message, waiting at most a few seconds for it.
func receive(conn *websocket.Conn) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, data, err := conn.Read(ctx)
	if err != nil {
		log.Fatal(err)
	}
	return string(data)
}

// stop shuts the Troupe server down before the HTTP test server: the latter
// does not wait for connections that became WebSockets.
func stop(srv *troupe.Server, ts *httptest.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		log.Fatal(err)
	}
	ts.Close()
}

func ExampleHandleRequest() {
	srv, err := troupe.New(troupe.Config{})
	if err != nil {
		log.Fatal(err)
	}
	// What the function returns is the answer to the request's id.
	troupe.HandleRequest(srv, "sum", func(c *troupe.Context, xs []int) (int, error) {
		n := 0
		for _, x := range xs {
			n += x
		}
		return n, nil
	})
	ts := httptest.NewServer(srv)
	defer stop(srv, ts)

	conn := dial(ts.URL)
	defer conn.Close(websocket.StatusNormalClosure, "")
	send(conn, `{"type":"sum","payload":[1,2,3],"id":"q1"}`)
	fmt.Println(receive(conn))
	send(conn, `{"type":"sum","payload":"three","id":"q2"}`)
	fmt.Println(receive(conn))
	// Output:
	// {"type":"reply","payload":6,"id":"q1"}
	// {"type":"error","payload":{"code":"invalid_payload","message":"payload of \"sum\": json: cannot unmarshal string into Go value of type []int"},"id":"q2"}
}
