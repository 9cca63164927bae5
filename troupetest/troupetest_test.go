package troupetest_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/troupetest"
)

// connectors return, for each kind of connection a Client has (a WebSocket
// through NewServer, a Pipe), how to connect a client to srv.
func connectors() map[string]func(t *testing.T, srv *troupe.Server) func(testing.TB) *troupetest.Client {
	return map[string]func(*testing.T, *troupe.Server) func(testing.TB) *troupetest.Client{
		"websocket": func(t *testing.T, srv *troupe.Server) func(testing.TB) *troupetest.Client {
			ts := troupetest.NewServer(t, srv)
			return ts.Dial
		},
		"pipe": func(t *testing.T, srv *troupe.Server) func(testing.TB) *troupetest.Client {
			return func(t testing.TB) *troupetest.Client { return troupetest.Pipe(t, srv) }
		},
	}
}

// both runs test once over each kind of connection, with a server built
// from cfg and setup.
func both(t *testing.T, cfg troupe.Config, setup func(*troupe.Server), test func(t *testing.T, srv *troupe.Server, dial func(testing.TB) *troupetest.Client)) {
	for name, connect := range connectors() {
		t.Run(name, func(t *testing.T) {
			srv, err := troupe.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = srv.Close() }) // after the clients' cleanup
			if setup != nil {
				setup(srv)
			}
			test(t, srv, connect(t, srv))
		})
	}
}

func registerSum(srv *troupe.Server) {
	// "sum" tells its progress first, a message with no id that Request
	// must leave queued.
	troupe.HandleRequest(srv, "sum", func(c *troupe.Context, xs []int) (int, error) {
		_ = c.Session().Send("progress", len(xs))
		n := 0
		for _, x := range xs {
			n += x
		}
		return n, nil
	})
	troupe.Handle(srv, "refuse", func(c *troupe.Context, _ any) error {
		return troupe.NewError("nope", "not today")
	})
	troupe.Handle(srv, "silent", func(c *troupe.Context, _ any) error { return nil })
	troupe.Handle(srv, "hangup", func(c *troupe.Context, _ any) error {
		return c.Session().CloseWith(4002, "hung up")
	})
}

func TestRequest(t *testing.T) {
	both(t, troupe.Config{}, registerSum, func(t *testing.T, _ *troupe.Server, dial func(testing.TB) *troupetest.Client) {
		c := dial(t)
		var sum int
		if err := c.Request("sum", []int{1, 2, 3}, &sum); err != nil || sum != 6 {
			t.Fatalf("sum: %d, %v; want 6", sum, err)
		}
		// A second request gets its own answer, not the first one's.
		if err := c.Request("sum", []int{4, 5}, &sum); err != nil || sum != 9 {
			t.Fatalf("second sum: %d, %v; want 9", sum, err)
		}
		// What arrived meanwhile is still there, in order.
		var n int
		c.Expect("progress", &n)
		if n != 3 {
			t.Fatalf("first progress %d, want 3", n)
		}
		c.Expect("progress", &n)
		if n != 2 {
			t.Fatalf("second progress %d, want 2", n)
		}

		err := c.Request("refuse", nil, nil)
		var re *troupe.ReplyError
		if !errors.As(err, &re) || re.Code != "nope" || re.Message != "not today" {
			t.Fatalf("refuse: %v, want a ReplyError nope / not today", err)
		}
		err = c.Request("no.such.type", nil, nil)
		if !errors.As(err, &re) || re.Code != "unknown_type" {
			t.Fatalf("unknown type: %v, want a ReplyError unknown_type", err)
		}

		// A handler that answered nothing: the empty reply, and reply is
		// left as it was.
		sum = -1
		if err := c.Request("silent", nil, &sum); err != nil || sum != -1 {
			t.Fatalf("silent: %d, %v; want nothing", sum, err)
		}
	})
}

type roomMessage struct {
	Seq  int    `json:"seq"`
	From string `json:"from"`
	Body string `json:"body"`
}

func TestRoomTrafficInOrder(t *testing.T) {
	both(t, troupe.Config{RoomProtocol: true}, nil, func(t *testing.T, _ *troupe.Server, dial func(testing.TB) *troupetest.Client) {
		alice, bob := dial(t), dial(t)
		if err := alice.Request("room.join", map[string]string{"room": "r"}, nil); err != nil {
			t.Fatal(err)
		}
		var j struct {
			Members []struct{ ID string } `json:"members"`
		}
		if err := bob.Request("room.join", map[string]string{"room": "r"}, &j); err != nil || len(j.Members) != 2 {
			t.Fatalf("bob's join: %+v, %v; want two members", j, err)
		}
		alice.Expect("presence.diff", nil)

		// Published with an id: alice's room.published is taken by
		// Request, her room.message stays queued before the rest.
		var pub struct{ Seq int }
		if err := alice.Request("room.publish", map[string]any{"room": "r", "body": "one"}, &pub); err != nil || pub.Seq != 1 {
			t.Fatalf("publish: %+v, %v; want seq 1", pub, err)
		}
		for i := 2; i <= 20; i++ {
			bob.Send("room.publish", map[string]any{"room": "r", "body": fmt.Sprint(i)})
		}
		for _, c := range []*troupetest.Client{alice, bob} {
			for i := 1; i <= 20; i++ {
				var m roomMessage
				c.Expect("room.message", &m)
				if want := map[bool]string{true: "one", false: fmt.Sprint(i)}[i == 1]; m.Seq != i || m.Body != want {
					t.Fatalf("message %d: %+v, want seq %d body %q", i, m, i, want)
				}
			}
		}
	})
}

func TestCloses(t *testing.T) {
	closed := make(chan int, 1)
	cfg := troupe.Config{OnClose: func(_ *troupe.Session, code int, _ string) { closed <- code }}
	both(t, cfg, registerSum, func(t *testing.T, srv *troupe.Server, dial func(testing.TB) *troupetest.Client) {
		c := dial(t)
		c.Send("hangup", nil)
		if code, reason := c.ExpectClose(); code != 4002 || reason != "hung up" {
			t.Fatalf("ExpectClose: %d %q, want 4002 hung up", code, reason)
		}
		if code := <-closed; code != 4002 {
			t.Fatalf("OnClose: %d, want 4002", code)
		}

		// A client that closes: the server sees 1000.
		c = dial(t)
		var sum int
		if err := c.Request("sum", []int{1}, &sum); err != nil {
			t.Fatal(err)
		}
		c.Close()
		select {
		case code := <-closed:
			if code != 1000 {
				t.Fatalf("OnClose after Close: %d, want 1000", code)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no OnClose after Close")
		}
		// What arrived before the close can still be taken.
		c.Expect("progress", nil)

		// A server shutting down closes with 1001.
		c = dial(t)
		if err := c.Request("sum", nil, nil); err != nil {
			t.Fatal(err)
		}
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(ctx)
		}()
		if code, _ := c.ExpectClose(); code != 1001 {
			t.Fatalf("after Shutdown: close %d, want 1001", code)
		}
		<-closed
	})
}

// fatalTB is a testing.TB whose Fatalf ends the goroutine and reports the
// message, so that a test can check how troupetest fails one.
type fatalTB struct {
	testing.TB
	msgs chan string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msgs <- fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// failure runs fn on a goroutine of its own and returns what it failed
// with.
func failure(t *testing.T, tb *fatalTB, fn func()) string {
	t.Helper()
	go func() {
		fn()
		tb.msgs <- ""
	}()
	msg := <-tb.msgs
	if msg == "" {
		t.Fatal("did not fail the test")
	}
	return msg
}

func TestFailuresShowWhatArrived(t *testing.T) {
	tb := &fatalTB{TB: t, msgs: make(chan string, 1)}
	both(t, troupe.Config{}, registerSum, func(t *testing.T, _ *troupe.Server, dial func(testing.TB) *troupetest.Client) {
		tb.TB = t
		c := dial(tb)
		c.Send("sum", []int{1, 2})
		msg := failure(t, tb, func() { c.Expect("sum.done", nil) })
		if !strings.Contains(msg, `want "sum.done"`) || !strings.Contains(msg, `{"type":"progress","payload":2}`) {
			t.Errorf("wrong type: %s", msg)
		}

		c = dial(tb)
		c.Send("hangup", nil)
		msg = failure(t, tb, func() { c.Expect("progress", nil) })
		if !strings.Contains(msg, "4002") || !strings.Contains(msg, "hung up") {
			t.Errorf("closed: %s", msg)
		}
	})
}

func TestRequestFailsWhenTheConnectionEnds(t *testing.T) {
	tb := &fatalTB{TB: t, msgs: make(chan string, 1)}
	both(t, troupe.Config{}, registerSum, func(t *testing.T, _ *troupe.Server, dial func(testing.TB) *troupetest.Client) {
		tb.TB = t
		c := dial(tb)
		c.Send("sum", []int{7})
		msg := failure(t, tb, func() { _ = c.Request("hangup", nil, nil) })
		if !strings.Contains(msg, `no answer to "hangup"`) || !strings.Contains(msg, "4002") || !strings.Contains(msg, `"payload":1`) {
			t.Errorf("Request: %s", msg)
		}
	})
}

func TestDial(t *testing.T) {
	srv, err := troupe.New(troupe.Config{
		Authorize: func(r *http.Request) (string, error) {
			if tok := r.Header.Get("Authorization"); tok != "" {
				return strings.TrimPrefix(tok, "Bearer "), nil
			}
			return "", errors.New("no token")
		},
		OnOpen: func(s *troupe.Session) { _ = s.Send("hello", s.Identity()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := troupetest.NewServer(t, srv)
	if !strings.HasPrefix(ts.URL, "ws://127.0.0.1:") {
		t.Fatalf("URL %s, want ws://127.0.0.1:port", ts.URL)
	}
	c := troupetest.Dial(t, ts.URL+"/any/path", http.Header{"Authorization": {"Bearer ann"}})
	var who string
	c.Expect("hello", &who)
	if who != "ann" {
		t.Fatalf("identity %q, want ann", who)
	}

	tb := &fatalTB{TB: t, msgs: make(chan string, 1)}
	if msg := failure(t, tb, func() { ts.Dial(tb) }); !strings.Contains(msg, "HTTP 401") {
		t.Errorf("refused dial: %s", msg)
	}
}
