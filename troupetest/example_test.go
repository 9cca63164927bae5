package troupetest_test

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/troupetest"
)

type greeting struct {
	Name string `json:"name"`
}

// A typed handler and a request with its reply, over a real WebSocket.
func ExampleNewServer() {
	t := exampleT() // in a test, the test's *testing.T
	defer t.finish()

	srv, err := troupe.New(troupe.Config{})
	if err != nil {
		t.Fatal(err)
	}
	troupe.Handle(srv, "greet", func(c *troupe.Context, g greeting) error {
		if g.Name == "" {
			return troupe.NewError("no_name", "who are you?")
		}
		return c.Reply("greeting", "hello, "+g.Name)
	})
	ts := troupetest.NewServer(t, srv) // shut down at the test's cleanup

	c := ts.Dial(t)
	var answer string
	if err := c.Request("greet", greeting{Name: "ann"}, &answer); err != nil {
		t.Fatal(err)
	}
	fmt.Println(answer)

	// An error the handler returns comes back as a *troupe.ReplyError.
	var re *troupe.ReplyError
	if err := c.Request("greet", greeting{}, nil); errors.As(err, &re) {
		fmt.Println(re.Code, re.Message)
	}
	// Output:
	// hello, ann
	// no_name who are you?
}

// A room broadcast with the built-in room protocol: every member gets each
// message, in the room's order.
func ExampleClient_Expect() {
	t := exampleT() // in a test, the test's *testing.T
	defer t.finish()

	srv, err := troupe.New(troupe.Config{RoomProtocol: true})
	if err != nil {
		t.Fatal(err)
	}
	ts := troupetest.NewServer(t, srv)
	alice, bob := ts.Dial(t), ts.Dial(t)

	for _, c := range []*troupetest.Client{alice, bob} {
		if err := c.Request("room.join", map[string]string{"room": "lobby"}, nil); err != nil {
			t.Fatal(err)
		}
	}
	alice.Expect("presence.diff", nil) // bob joined

	// With an id, a publish is answered once the room has it.
	if err := alice.Request("room.publish", map[string]any{"room": "lobby", "body": "hi all"}, nil); err != nil {
		t.Fatal(err)
	}
	bob.Send("room.publish", map[string]any{"room": "lobby", "body": "hi alice"})
	type message struct {
		Seq  int    `json:"seq"`
		Body string `json:"body"`
	}
	for _, c := range []*troupetest.Client{alice, bob} {
		var m1, m2 message
		c.Expect("room.message", &m1)
		c.Expect("room.message", &m2)
		fmt.Println(m1, m2)
	}
	// Output:
	// {1 hi all} {2 hi alice}
	// {1 hi all} {2 hi alice}
}

// The same handler tested in memory, with no socket: Pipe serves the
// connection through troupe.Server.ServeConn.
func ExamplePipe() {
	t := exampleT() // in a test, the test's *testing.T
	defer t.finish()

	srv, err := troupe.New(troupe.Config{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() }) // after the client's own cleanup
	troupe.HandleRequest(srv, "sum", func(c *troupe.Context, xs []int) (int, error) {
		n := 0
		for _, x := range xs {
			n += x
		}
		return n, nil
	})

	c := troupetest.Pipe(t, srv)
	var sum int
	if err := c.Request("sum", []int{1, 2, 3}, &sum); err != nil {
		t.Fatal(err)
	}
	fmt.Println(sum)
	// Output: 6
}

// A session the server closes.
func ExampleClient_ExpectClose() {
	t := exampleT() // in a test, the test's *testing.T
	defer t.finish()

	srv, err := troupe.New(troupe.Config{
		OnOpen: func(s *troupe.Session) { _ = s.CloseWith(4001, "go away") },
	})
	if err != nil {
		t.Fatal(err)
	}
	c := troupetest.NewServer(t, srv).Dial(t)
	fmt.Println(c.ExpectClose())
	// Output: 4001 go away
}

// exampleTB stands in for a *testing.T in the examples, which have none.
type exampleTB struct {
	testing.TB // nil: only the methods below are called
	cleanups   []func()
}

func exampleT() *exampleTB { return &exampleTB{} }

func (t *exampleTB) Helper()                      {}
func (t *exampleTB) Cleanup(f func())             { t.cleanups = append(t.cleanups, f) }
func (t *exampleTB) Fatal(args ...any)            { t.Fatalf("%s", fmt.Sprint(args...)) }
func (t *exampleTB) Errorf(f string, args ...any) { fmt.Fprintf(os.Stderr, f+"\n", args...) }
func (t *exampleTB) Fatalf(f string, args ...any) {
	t.Errorf(f, args...)
	t.finish()
	os.Exit(1)
}

func (t *exampleTB) finish() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
	t.cleanups = nil
}
