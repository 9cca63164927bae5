package tests

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/typed"
)

type echoMsg struct {
	Text string `json:"text"`
}

type countMsg struct {
	N int `json:"n"`
}

// TestTypedErrorsReachOnlyTheSender checks that every way a typed message
// can fail is answered with an error envelope
// {"type":"error","payload":{"code","message"},"id"} to the session that
// sent it, carrying its id, and to no one else, and that a handler panic
// leaves the session working.
func TestTypedErrorsReachOnlyTheSender(t *testing.T) {
	h := startServer(t, troupe.Config{})
	troupe.Handle(h.srv, "echo", func(c *troupe.Context, m echoMsg) error {
		return c.Reply("echo.ok", m)
	})
	troupe.Handle(h.srv, "count", func(c *troupe.Context, m countMsg) error {
		return c.Reply("count.ok", m.N)
	})
	troupe.Handle(h.srv, "fail", func(*troupe.Context, struct{}) error {
		return errors.New("cannot do that")
	})
	troupe.Handle(h.srv, "refuse", func(*troupe.Context, struct{}) error {
		return troupe.NewError("quota_exceeded", "too many requests")
	})
	troupe.Handle(h.srv, "boom", func(*troupe.Context, struct{}) error {
		panic("kaboom")
	})

	sender := h.dial(t, "sender")
	sender.startReading()
	bystander := h.dial(t, "bystander")
	bystander.startReading()
	senderS := h.rec.session(t, "sender")

	for _, tc := range []struct {
		name     string
		frame    string
		code     string
		id       string // raw JSON; "" for none
		contains string // in the message
	}{
		{"unknown type", `{"type":"nope","id":1}`, typed.CodeUnknownType, "1", "nope"},
		{"invalid JSON", `{"type":"echo",`, typed.CodeBadRequest, "", ""},
		{"not an envelope", `[1,2,3]`, typed.CodeBadRequest, "", ""},
		{"missing type", `{"payload":{}}`, typed.CodeBadRequest, "", "type"},
		{"id neither string nor number", `{"type":"echo","id":{"a":1}}`, typed.CodeBadRequest, "", "id"},
		{"bad payload", `{"type":"count","payload":{"n":"seven"},"id":"req-2"}`, typed.CodeInvalidPayload, `"req-2"`, "count"},
		{"handler error", `{"type":"fail","id":3}`, typed.CodeHandlerError, "3", "cannot do that"},
		{"handler *Error", `{"type":"refuse","id":"r4"}`, "quota_exceeded", `"r4"`, "too many requests"},
		{"handler panic", `{"type":"boom","id":5}`, typed.CodeInternal, "5", "boom"},
	} {
		sender.write(t, []byte(tc.frame))
		e := sender.nextEnvelope(t)
		if e.Type != "error" {
			t.Errorf("%s: got %q, want an error envelope", tc.name, e.Type)
			continue
		}
		p := decodePayload[errorPayload](t, e)
		if p.Code != tc.code || !strings.Contains(p.Message, tc.contains) {
			t.Errorf("%s: error %+v, want code %q with %q in the message", tc.name, p, tc.code, tc.contains)
		}
		if string(e.ID) != tc.id {
			t.Errorf("%s: id %s, want %q", tc.name, e.ID, tc.id)
		}
		if tc.code == typed.CodeInternal && strings.Contains(p.Message, "kaboom") {
			t.Errorf("%s: the panic value leaked to the client: %q", tc.name, p.Message)
		}
	}

	// The panic went to OnError, and the session lives on.
	var pe *typed.PanicError
	if errs := h.rec.errorsOf(senderS); len(errs) != 1 || !errors.As(errs[0], &pe) || pe.Value != "kaboom" {
		t.Errorf("OnError for the sender: %v, want the handler's panic", errs)
	}
	sender.write(t, mustEnvelope(t, "echo", echoMsg{Text: "still here"}, json.RawMessage("6")))
	if e := sender.expect(t, "echo.ok"); decodePayload[echoMsg](t, e).Text != "still here" || string(e.ID) != "6" {
		t.Errorf("echo after the panic: %s id %s", e.Payload, e.ID)
	}
	if !senderS.IsOpen() {
		t.Error("sender's session closed after the panic")
	}

	// Whatever the errors sent anyone else would be queued before the
	// bystander's own reply: that reply must be the first thing it gets.
	bystander.write(t, mustEnvelope(t, "echo", echoMsg{Text: "me"}, json.RawMessage(`"b1"`)))
	if e := bystander.expect(t, "echo.ok"); string(e.ID) != `"b1"` {
		t.Errorf("bystander reply id %s", e.ID)
	}
	if n := bystander.received(); n != 1 {
		t.Errorf("bystander received %d messages, want only its own reply", n)
	}
}

// TestReplyEchoesRequestID checks that Reply echoes the request id exactly
// as the client wrote it, string or number, and adds none when there was
// none.
func TestReplyEchoesRequestID(t *testing.T) {
	h := startServer(t, troupe.Config{})
	troupe.Handle(h.srv, "echo", func(c *troupe.Context, m echoMsg) error {
		return c.Reply("echo.ok", m)
	})
	c := h.dial(t, "client")
	c.startReading()

	for _, id := range []string{`42`, `0`, `-7`, `3.25`, `1e3`, `12345678901234567890`, `"abc-1"`, `""`, `"with \"quotes\""`, `"ünï"`} {
		c.write(t, []byte(`{"type":"echo","payload":{"text":"x"},"id":`+id+`}`))
		e := c.expect(t, "echo.ok")
		if string(e.ID) != id {
			t.Errorf("id %s came back as %s", id, e.ID)
		}
	}
	for _, frame := range []string{`{"type":"echo","payload":{"text":"x"}}`, `{"type":"echo","payload":{"text":"x"},"id":null}`} {
		c.write(t, []byte(frame))
		if e := c.expect(t, "echo.ok"); e.ID != nil {
			t.Errorf("%s: reply has id %s, want none", frame, e.ID)
		}
	}
}

type burstMsg struct {
	Room string `json:"room"`
	N    int    `json:"n"`
}

type seqMsg struct {
	Seq int `json:"seq"`
}

// TestNDJSONBatchesEnvelopes checks that a client that negotiates the
// "ndjson" subprotocol gets the messages queued for it batched as
// newline-separated envelopes, all of them and in order once the frames are
// split, while a client without it gets exactly one envelope per frame.
func TestNDJSONBatchesEnvelopes(t *testing.T) {
	const room, burst = "nd", 2000
	h := startServer(t, troupe.Config{Settings: troupe.Settings{MaxQueuedMessages: 2 * burst}})
	registerJoin(h.srv)
	troupe.Handle(h.srv, "burst", func(c *troupe.Context, m burstMsg) error {
		for i := range m.N {
			if err := c.Server().Broadcast(m.Room, "seq", seqMsg{Seq: i}); err != nil {
				return err
			}
		}
		return nil
	})

	nd := h.dial(t, "ndjson", "ndjson")
	if got := nd.ws.Subprotocol(); got != "ndjson" {
		t.Fatalf("negotiated subprotocol %q, want ndjson", got)
	}
	plain := h.dial(t, "plain")
	if got := plain.ws.Subprotocol(); got != "" {
		t.Fatalf("plain client: subprotocol %q", got)
	}
	for _, c := range []*client{nd, plain} {
		c.startReading()
		c.join(t, room)
	}
	if got := h.rec.session(t, "ndjson").Subprotocol(); got != "ndjson" {
		t.Errorf("Session.Subprotocol() = %q", got)
	}

	nd.send(t, "burst", burstMsg{Room: room, N: burst})

	frames := 0
	for seq := 0; seq < burst; frames++ {
		for _, line := range bytes.Split(nd.next(t), []byte("\n")) {
			e := decodeEnvelope(t, line)
			if m := decodePayload[seqMsg](t, e); e.Type != "seq" || m.Seq != seq {
				t.Fatalf("ndjson: message %d is %q %s", seq, e.Type, e.Payload)
			}
			seq++
		}
	}
	t.Logf("ndjson: %d messages in %d frames", burst, frames)
	if frames == burst {
		t.Errorf("ndjson: %d messages queued at once came in as many frames: nothing was batched", burst)
	}

	for seq := range burst {
		f := plain.next(t)
		if bytes.IndexByte(f, '\n') >= 0 {
			t.Fatalf("plain: frame %d holds several lines", seq)
		}
		if m := decodePayload[seqMsg](t, decodeEnvelope(t, f)); m.Seq != seq {
			t.Fatalf("plain: message %d has seq %d", seq, m.Seq)
		}
	}

	// Nothing more arrives: a final reply is the next frame for both.
	for _, c := range []*client{nd, plain} {
		c.send(t, "join", joinMsg{Room: room})
		c.expect(t, "joined")
	}
}
