package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

// startServer serves a room-protocol server with a "sum" request on
// 127.0.0.1 and returns its ws:// URL and a function that stops it.
func startServer() (string, func()) {
	srv, err := troupe.New(troupe.Config{RoomProtocol: true})
	if err != nil {
		panic(err)
	}
	troupe.HandleRequest(srv, "sum", func(_ *troupe.Context, xs []int) (int, error) {
		n := 0
		for _, x := range xs {
			n += x
		}
		return n, nil
	})
	ts := httptest.NewServer(srv) // 127.0.0.1
	return "ws" + strings.TrimPrefix(ts.URL, "http"), func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	}
}

// Request/reply: the answer's payload decoded into the type asked for;
// an error envelope is a *client.Error.
func Example_request() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, []string{url}, nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()

	sum, err := client.Request[int](ctx, c, "sum", []int{1, 2, 3})
	fmt.Println(sum, err)

	_, err = client.Request[int](ctx, c, "product", []int{1, 2, 3})
	fmt.Println(err)
	// Output:
	// 6 <nil>
	// troupe: unknown_type: no handler for type "product"
}

// Rooms: join with meta, publish, and receive every member's messages in
// sequence order, each once, across reconnects.
func Example_room() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	ann, err := client.Dial(ctx, []string{url}, nil)
	if err != nil {
		panic(err)
	}
	defer ann.Close()
	bob, err := client.Dial(ctx, []string{url}, nil)
	if err != nil {
		panic(err)
	}
	defer bob.Close()

	got := make(chan string)
	lobby := ann.Room("lobby")
	lobby.OnMessage(func(m client.Message) {
		var body struct{ Text string }
		_ = m.Decode(&body)
		got <- fmt.Sprint(m.Seq, " ", body.Text)
	})
	if _, err := lobby.Join(ctx, map[string]string{"name": "ann"}); err != nil {
		panic(err)
	}
	if _, err := bob.Room("lobby").Join(ctx, map[string]string{"name": "bob"}); err != nil {
		panic(err)
	}
	seq, err := bob.Room("lobby").Publish(ctx, map[string]string{"text": "hi"})
	fmt.Println("published", seq, err)
	fmt.Println(<-got)
	// Output:
	// published 1 <nil>
	// 1 hi
}

// The HTTP fallback: where a proxy refuses the WebSocket upgrade (here the
// server answers nothing but the fallback), client.Fallback opens an SSE
// session on the same URL instead, and the client works the same.
func Example_fallback() {
	srv, err := troupe.New(troupe.Config{})
	if err != nil {
		panic(err)
	}
	troupe.HandleRequest(srv, "sum", func(_ *troupe.Context, xs []int) (int, error) {
		return xs[0] + xs[1], nil
	})
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "" {
			http.Error(w, "no WebSocket here", http.StatusForbidden)
			return
		}
		srv.ServeHTTP(w, r)
	}))
	defer ts.Close()
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, []string{"ws" + strings.TrimPrefix(ts.URL, "http")}, &client.Options{
		Transport: &client.Fallback{},
	})
	if err != nil {
		panic(err)
	}
	defer c.Close()
	sum, err := client.Request[int](ctx, c, "sum", []int{40, 2})
	fmt.Println(sum, err)
	// Output: 42 <nil>
}

// PublishMid: an application that keeps its unsent messages (a draft
// queue, say) gives each its own id, so that sending one again, even from
// a new client after a restart, publishes it once.
func ExampleRoom_PublishMid() {
	url, stop := startServer()
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	c, err := client.Dial(ctx, []string{url}, nil)
	if err != nil {
		panic(err)
	}
	defer c.Close()
	orders := c.Room("orders")
	if _, err := orders.Join(ctx, nil); err != nil {
		panic(err)
	}
	first, err := orders.PublishMid(ctx, "order-17", map[string]int{"qty": 2})
	fmt.Println("published", first, err)
	again, err := orders.PublishMid(ctx, "order-17", map[string]int{"qty": 2})
	fmt.Println("sent again: seq", again, err)
	// Output:
	// published 1 <nil>
	// sent again: seq 1 <nil>
}
