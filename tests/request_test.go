package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/typed"
)

type addMsg struct {
	A int `json:"a"`
	B int `json:"b"`
}

type sumMsg struct {
	Sum int `json:"sum"`
}

// expectPong sends a ping with a fresh id and checks that the very next
// frame is its pong: whatever a test expected not to be sent before it
// was not.
func expectPong(t *testing.T, c *client, what string) {
	t.Helper()
	id := fmt.Sprintf(`"pong-check-%d"`, time.Now().UnixNano())
	c.write(t, mustEnvelope(t, "ping", nil, json.RawMessage(id)))
	if e := c.nextEnvelope(t); e.Type != "pong" || string(e.ID) != id {
		t.Fatalf("%s: got %s id %s (payload %s) before the pong", what, e.Type, e.ID, e.Payload)
	}
}

// TestRequestHandlerValueBecomesReply checks that what a HandleRequest
// handler returns reaches the client as {"type":"reply"} with the request's
// id, for ids of every JSON kind the envelope allows.
func TestRequestHandlerValueBecomesReply(t *testing.T) {
	h := startServer(t, troupe.Config{})
	troupe.HandleRequest(h.srv, "add", func(_ *troupe.Context, m addMsg) (sumMsg, error) {
		return sumMsg{Sum: m.A + m.B}, nil
	})
	c := h.dial(t, "client")
	c.startReading()
	for i, id := range []string{`"req-1"`, `2`, `"ünï"`, `3.5`} {
		c.write(t, mustEnvelope(t, "add", addMsg{A: i, B: 40}, json.RawMessage(id)))
		e := c.expect(t, "reply")
		if string(e.ID) != id {
			t.Errorf("reply to id %s carries id %s", id, e.ID)
		}
		if got := decodePayload[sumMsg](t, e); got.Sum != i+40 {
			t.Errorf("reply to id %s: %s, want sum %d", id, e.Payload, i+40)
		}
	}
	expectPong(t, c, "after the replies")
}

// TestRequestHandlerErrorBecomesErrorWithID checks that an error returned by
// a HandleRequest handler answers the request with an error envelope that
// carries its id, the code of a *troupe.Error or handler_error, and no
// reply besides.
func TestRequestHandlerErrorBecomesErrorWithID(t *testing.T) {
	h := startServer(t, troupe.Config{})
	troupe.HandleRequest(h.srv, "add", func(_ *troupe.Context, m addMsg) (sumMsg, error) {
		switch {
		case m.A < 0:
			return sumMsg{}, troupe.NewError("negative", "a is negative")
		case m.B < 0:
			return sumMsg{}, errors.New("b is negative")
		}
		return sumMsg{Sum: m.A + m.B}, nil
	})
	c := h.dial(t, "client")
	c.startReading()
	for _, tc := range []struct {
		frame, id, code, message string
	}{
		{`{"type":"add","id":"e1","payload":{"a":-1,"b":1}}`, `"e1"`, "negative", "a is negative"},
		{`{"type":"add","id":7,"payload":{"a":1,"b":-1}}`, `7`, typed.CodeHandlerError, "b is negative"},
		{`{"type":"add","id":"e3","payload":{"a":"one"}}`, `"e3"`, typed.CodeInvalidPayload, ""},
	} {
		c.write(t, []byte(tc.frame))
		e := c.expect(t, "error")
		p := decodePayload[errorPayload](t, e)
		if string(e.ID) != tc.id || p.Code != tc.code || !strings.Contains(p.Message, tc.message) {
			t.Errorf("%s answered id %s %+v, want id %s code %s", tc.frame, e.ID, p, tc.id, tc.code)
		}
		expectPong(t, c, tc.frame)
	}
}

// TestRequestUnansweredGetsEmptyReply checks that every request with an id
// is answered exactly once: a handler that sends nothing still produces an
// empty {"type":"reply"} with the id, a handler that replies itself
// produces only its own reply, and a message without an id gets nothing.
func TestRequestUnansweredGetsEmptyReply(t *testing.T) {
	h := startServer(t, troupe.Config{})
	handled := make(chan string, 8)
	troupe.Handle(h.srv, "note", func(_ *troupe.Context, m echoMsg) error {
		handled <- m.Text
		return nil
	})
	troupe.Handle(h.srv, "custom", func(c *troupe.Context, m echoMsg) error {
		return c.Reply("custom.ok", m)
	})
	c := h.dial(t, "client")
	c.startReading()

	c.write(t, mustEnvelope(t, "note", echoMsg{Text: "with id"}, json.RawMessage(`"n1"`)))
	e := c.expect(t, "reply")
	if string(e.ID) != `"n1"` || (len(e.Payload) != 0 && string(e.Payload) != "null") {
		t.Fatalf("unanswered request got reply id %s payload %s, want id \"n1\" and no payload", e.ID, e.Payload)
	}
	expectPong(t, c, "after the empty reply")

	c.write(t, mustEnvelope(t, "note", echoMsg{Text: "no id"}, nil))
	expectPong(t, c, "a message without an id")
	for _, want := range []string{"with id", "no id"} {
		if got := <-handled; got != want {
			t.Fatalf("handler saw %q, want %q", got, want)
		}
	}

	c.write(t, mustEnvelope(t, "custom", echoMsg{Text: "x"}, json.RawMessage(`5`)))
	if e := c.expect(t, "custom.ok"); string(e.ID) != "5" {
		t.Fatalf("custom reply carries id %s, want 5", e.ID)
	}
	expectPong(t, c, "after a handler's own reply")
}

// askClient starts a client named name that reads, and returns it with its
// server-side session.
func askClient(t *testing.T, h *testServer, name string) (*client, *troupe.Session) {
	t.Helper()
	c := h.dial(t, name)
	c.startReading()
	return c, h.rec.session(t, name)
}

type askResult struct {
	payload json.RawMessage
	err     error
}

// ask runs s.Request in the background: it blocks until the client answers.
func ask(ctx context.Context, s *troupe.Session, typ string, payload any) <-chan askResult {
	ch := make(chan askResult, 1)
	go func() {
		p, err := s.Request(ctx, typ, payload)
		ch <- askResult{p, err}
	}()
	return ch
}

func result(t *testing.T, ch <-chan askResult) askResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-afterTimeout():
		t.Fatal("Session.Request did not return")
		return askResult{}
	}
}

// TestServerRequestResolvesWithClientReply checks Session.Request: the
// client gets the envelope with the type, the payload and an id, and its
// {"type":"reply"} with that id resolves the request with the reply's
// payload; concurrent requests answered out of order each get their own.
func TestServerRequestResolvesWithClientReply(t *testing.T) {
	h := startServer(t, troupe.Config{})
	c, s := askClient(t, h, "asked")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()

	const n = 5
	results := make([]<-chan askResult, n)
	ids := make(map[int]json.RawMessage, n)
	for i := range n {
		results[i] = ask(ctx, s, "question", map[string]int{"q": i})
		e := c.expect(t, "question")
		var id string
		if err := json.Unmarshal(e.ID, &id); err != nil || id == "" {
			t.Fatalf("request id %s is not a non-empty string", e.ID)
		}
		var q struct{ Q int }
		if err := json.Unmarshal(e.Payload, &q); err != nil || q.Q != i {
			t.Fatalf("request payload %s, want q %d", e.Payload, i)
		}
		for j, other := range ids {
			if string(other) == string(e.ID) {
				t.Fatalf("requests %d and %d share id %s", j, i, e.ID)
			}
		}
		ids[i] = e.ID
	}
	for i := n - 1; i >= 0; i-- {
		c.write(t, mustEnvelope(t, "reply", map[string]int{"answer": 100 + i}, ids[i]))
	}
	for i := range n {
		r := result(t, results[i])
		var a struct{ Answer int }
		if r.err != nil || json.Unmarshal(r.payload, &a) != nil || a.Answer != 100+i {
			t.Errorf("request %d returned %s, %v; want answer %d", i, r.payload, r.err, 100+i)
		}
	}
}

// TestServerRequestErrorAnswer checks that a client answering with an error
// envelope makes Session.Request return a *session.ReplyError with its code
// and message.
func TestServerRequestErrorAnswer(t *testing.T) {
	h := startServer(t, troupe.Config{})
	c, s := askClient(t, h, "asked")
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	res := ask(ctx, s, "question", nil)
	e := c.expect(t, "question")
	c.write(t, mustEnvelope(t, "error", errorPayload{Code: "declined", Message: "not now"}, e.ID))
	r := result(t, res)
	var re *session.ReplyError
	if !errors.As(r.err, &re) || re.Code != "declined" || re.Message != "not now" {
		t.Fatalf("Request returned %s, %v; want a ReplyError declined / not now", r.payload, r.err)
	}
}

// TestServerRequestWithoutAnswerEndsWithContext checks that a request the
// client never answers returns the context's error once it ends, and that
// the session goes on working.
func TestServerRequestWithoutAnswerEndsWithContext(t *testing.T) {
	h := startServer(t, troupe.Config{})
	c, s := askClient(t, h, "silent")
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r := result(t, ask(ctx, s, "question", nil))
	if !errors.Is(r.err, context.DeadlineExceeded) {
		t.Fatalf("unanswered Request returned %s, %v; want context.DeadlineExceeded", r.payload, r.err)
	}
	c.expect(t, "question")
	expectPong(t, c, "after an unanswered request")
}

// TestServerRequestSessionClosed checks that a request pending when the
// client goes away, and one made after, return ErrClosed.
func TestServerRequestSessionClosed(t *testing.T) {
	h := startServer(t, troupe.Config{})
	c, s := askClient(t, h, "leaving")
	res := ask(context.Background(), s, "question", nil)
	c.expect(t, "question")
	c.shutdown()
	if r := result(t, res); !errors.Is(r.err, troupe.ErrClosed) {
		t.Fatalf("Request pending when the client left returned %s, %v; want ErrClosed", r.payload, r.err)
	}
	h.rec.waitClose(t, s)
	if r := result(t, ask(context.Background(), s, "question", nil)); !errors.Is(r.err, troupe.ErrClosed) {
		t.Fatalf("Request on a closed session returned %s, %v; want ErrClosed", r.payload, r.err)
	}
}
