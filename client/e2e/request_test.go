package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

func TestRequestReply(t *testing.T) {
	srv, url := serve(t, troupe.Config{})
	troupe.HandleRequest(srv, "sum", func(_ *troupe.Context, xs []int) (int, error) {
		n := 0
		for _, x := range xs {
			n += x
		}
		return n, nil
	})
	troupe.HandleRequest(srv, "refuse", func(_ *troupe.Context, _ struct{}) (int, error) {
		return 0, troupe.NewError("nope", "not today")
	})
	troupe.HandleRequest(srv, "slow", func(_ *troupe.Context, _ struct{}) (int, error) {
		time.Sleep(300 * time.Millisecond)
		return 1, nil
	})
	c := dial(t, []string{url}, nil)
	ctx := ctxT(t)

	if n, err := client.Request[int](ctx, c, "sum", []int{1, 2, 3}); err != nil || n != 6 {
		t.Fatalf("sum: %d, %v", n, err)
	}

	var e *client.Error
	_, err := client.Request[int](ctx, c, "refuse", nil)
	if !errors.As(err, &e) || e.Code != "nope" || e.Message != "not today" {
		t.Fatalf("refuse: %v, want the error envelope nope", err)
	}
	_, err = client.Request[int](ctx, c, "no.such.type", nil)
	if !errors.As(err, &e) || e.Code != "unknown_type" {
		t.Fatalf("unknown type: %v", err)
	}
	_, err = client.Request[int](ctx, c, "sum", "not a list")
	if !errors.As(err, &e) || e.Code != "invalid_payload" {
		t.Fatalf("bad payload: %v", err)
	}

	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	if _, err := client.Request[int](short, c, "slow", nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow with a 50 ms deadline: %v, want DeadlineExceeded", err)
	}
	// The late answer is dropped; the next request gets its own.
	if n, err := client.Request[int](ctx, c, "sum", []int{40, 2}); err != nil || n != 42 {
		t.Fatalf("sum after a timeout: %d, %v", n, err)
	}

	// Many at once, each answer to its own request.
	errs := make(chan error, 20)
	for i := range 20 {
		go func() {
			n, err := client.Request[int](ctx, c, "sum", []int{i, i})
			if err == nil && n != 2*i {
				err = errors.New("wrong answer")
			}
			errs <- err
		}()
	}
	for range 20 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

type tick struct {
	N int `json:"n"`
}

// Typed messages the server sends reach Handle's function decoded, in the
// order they were sent; a payload of the wrong shape goes to OnError.
func TestHandleTypedMessages(t *testing.T) {
	srv, url := serve(t, troupe.Config{})
	troupe.Handle(srv, "subscribe", func(c *troupe.Context, n int) error {
		for i := 1; i <= n; i++ {
			if err := c.Session().Send("tick", tick{N: i}); err != nil {
				return err
			}
		}
		return c.Session().Send("tick", "not a tick")
	})
	errs := make(chan error, 1)
	c := dial(t, []string{url}, &client.Options{OnError: func(err error) { errs <- err }})
	got := make(chan int, 100)
	client.Handle(c, "tick", func(tk tick) { got <- tk.N })
	if err := c.Send(ctxT(t), "subscribe", 50); err != nil {
		t.Fatal(err)
	}
	for want := 1; want <= 50; want++ {
		select {
		case n := <-got:
			if n != want {
				t.Fatalf("tick %d, want %d", n, want)
			}
		case <-time.After(wait):
			t.Fatalf("no tick %d", want)
		}
	}
	select {
	case err := <-errs:
		t.Logf("undecodable payload reported: %v", err)
	case <-time.After(wait):
		t.Fatal("the undecodable payload was not reported")
	}
}

// The server's own requests (Session.Request) are answered by
// HandleRequest.
func TestServerRequest(t *testing.T) {
	opened := make(chan *troupe.Session, 1)
	_, url := serve(t, troupe.Config{OnOpen: func(s *troupe.Session) { opened <- s }})
	c := dial(t, []string{url}, nil)
	client.HandleRequest(c, "confirm", func(_ context.Context, q string) (string, error) {
		if q == "no" {
			return "", &client.Error{Code: "declined", Message: "no"}
		}
		return "yes to " + q, nil
	})
	s := <-opened
	raw, err := s.Request(ctxT(t), "confirm", "delete")
	var answer string
	if err != nil || json.Unmarshal(raw, &answer) != nil || answer != "yes to delete" {
		t.Fatalf("answer %s, %v", raw, err)
	}
	_, err = s.Request(ctxT(t), "confirm", "no")
	var re *troupe.ReplyError
	if !errors.As(err, &re) || re.Code != "declined" {
		t.Fatalf("declined: %v", err)
	}
	_, err = s.Request(ctxT(t), "other", nil)
	if !errors.As(err, &re) || re.Code != "unknown_type" {
		t.Fatalf("unhandled: %v", err)
	}
}

// Requests made while the connection is down wait for the next one; a
// request already sent when it drops fails with ErrDisconnected.
func TestRequestAcrossADrop(t *testing.T) {
	srv, url := serve(t, troupe.Config{})
	release := make(chan struct{})
	troupe.HandleRequest(srv, "hang", func(_ *troupe.Context, _ struct{}) (int, error) {
		<-release
		return 0, nil
	})
	troupe.HandleRequest(srv, "one", func(_ *troupe.Context, _ struct{}) (int, error) { return 1, nil })
	p := startProxy(t, url)
	st := newStatuses()
	c := dial(t, []string{p.URL}, &client.Options{OnStatus: st.add})
	ctx := ctxT(t)

	hung := make(chan error, 1)
	go func() {
		_, err := client.Request[int](ctx, c, "hang", nil)
		hung <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it be sent
	p.hold()
	p.cut()
	close(release)
	if err := <-hung; !errors.Is(err, client.ErrDisconnected) {
		t.Fatalf("a request cut off: %v, want ErrDisconnected", err)
	}
	st.waitFor(t, 0, "disconnected", func(s client.Status) bool { return s.State == client.Disconnected })
	queued := make(chan error, 1)
	go func() {
		n, err := client.Request[int](ctx, c, "one", nil)
		if err == nil && n != 1 {
			err = errors.New("wrong answer")
		}
		queued <- err
	}()
	p.release()
	if err := <-queued; err != nil {
		t.Fatalf("a request made while disconnected: %v", err)
	}
}
