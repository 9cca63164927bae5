package troupe_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/typed"
)

// fuzzMaxMessage is the fuzzed server's message size limit, small so that
// inputs over it (answered with close 1009) are within the fuzzer's reach.
const fuzzMaxMessage = 4096

// fuzzWait bounds every wait for the server; the fuzzing engine itself
// reports an input that takes 10 s as a hang.
const fuzzWait = 5 * time.Second

// fuzzPanic is what the application's "boom" handler panics with: the only
// panic OnError may ever be told about.
const fuzzPanic = "application handler panicked"

// fuzzFreshEvery is how many inputs go by between checks that a new client
// is served; one is also made after every connection the server closed.
const fuzzFreshEvery = 64

// frameRig is one server and one client connection, kept for a whole
// fuzzing worker so that each input costs a frame and a round trip, not a
// connection.
type frameRig struct {
	srv    *troupe.Server
	ts     *httptest.Server
	url    string
	nonce  string // makes the sentinel unguessable for the fuzzer
	client *websocket.Conn
	inputs int

	mu   sync.Mutex
	errs []error // what OnError received and the rig has not checked yet
}

type fuzzRoom struct {
	Room string `json:"room"`
}

type fuzzPublish struct {
	Room string          `json:"room"`
	Body json.RawMessage `json:"body"`
}

func newFrameRig(f *testing.F) *frameRig {
	f.Helper()
	rig := &frameRig{}
	var nonce [8]byte
	_, _ = rand.Read(nonce[:])
	rig.nonce = hex.EncodeToString(nonce[:])
	srv, err := troupe.New(troupe.Config{
		Settings: troupe.Settings{
			MaxMessageSize: fuzzMaxMessage,
			// A fuzzing worker may sit idle between inputs for longer than
			// the default timeouts, and its client reads only while it
			// waits for an answer (so it answers pings only then).
			PingInterval: -1,
			IdleTimeout:  -1,
		},
		OnError: func(_ *troupe.Session, err error) {
			rig.mu.Lock()
			rig.errs = append(rig.errs, err)
			rig.mu.Unlock()
		},
	})
	if err != nil {
		f.Fatalf("troupe.New: %v", err)
	}
	troupe.Handle(srv, "echo", func(c *troupe.Context, _ json.RawMessage) error {
		return c.Reply("echo", c.Payload())
	})
	troupe.Handle(srv, "room.join", func(c *troupe.Context, m fuzzRoom) error {
		if m.Room == "" {
			return troupe.NewError(typed.CodeInvalidPayload, "room is required")
		}
		if err := c.Join(m.Room); err != nil {
			return err
		}
		return c.Reply("room.joined", m)
	})
	troupe.Handle(srv, "room.leave", func(c *troupe.Context, m fuzzRoom) error {
		if err := c.Leave(m.Room); err != nil && !errors.Is(err, troupe.ErrNotMember) {
			return err
		}
		return c.Reply("room.left", m)
	})
	troupe.Handle(srv, "room.publish", func(c *troupe.Context, m fuzzPublish) error {
		if m.Room == "" {
			return troupe.NewError(typed.CodeInvalidPayload, "room is required")
		}
		if err := c.Server().Broadcast(m.Room, "room.message", m); err != nil {
			return err
		}
		return c.Reply("room.published", fuzzRoom{Room: m.Room})
	})
	troupe.Handle(srv, "fail", func(*troupe.Context, struct{}) error {
		return errors.New("plain failure")
	})
	troupe.Handle(srv, "refuse", func(*troupe.Context, struct{}) error {
		return troupe.NewError("forbidden", "not allowed")
	})
	troupe.Handle(srv, "boom", func(*troupe.Context, struct{}) error {
		panic(fuzzPanic)
	})
	rig.srv = srv
	rig.ts = httptest.NewServer(srv)
	rig.url = "ws" + strings.TrimPrefix(rig.ts.URL, "http")
	f.Cleanup(func() {
		if rig.client != nil {
			_ = rig.client.CloseNow()
		}
		_ = srv.Close()
		rig.ts.Close()
	})
	return rig
}

// FuzzFrames sends each input as one frame (text or binary) over a real
// WebSocket connection to a running server. Every input must be answered
// with valid JSON envelopes in valid UTF-8 text frames, each error one
// carrying a code and a message; text that is not a JSON object is answered
// with exactly one bad_request error, a binary frame with exactly one
// "unsupported" error, a frame over the size limit with close 1009, and
// text that is not UTF-8 with close 1007. The connection must keep working
// after every other input, no panic but the application's own may reach
// OnError, and a new client must still be served (echo, join, publish to
// itself, leave).
func FuzzFrames(f *testing.F) {
	rig := newFrameRig(f)
	f.Fuzz(func(t *testing.T, binary bool, data []byte) {
		rig.check(t, binary, data)
	})
}

func (rig *frameRig) check(t *testing.T, binary bool, data []byte) {
	rig.inputs++
	if rig.client == nil {
		rig.client = rig.dial(t)
	}
	t.Cleanup(func() {
		if t.Failed() && rig.client != nil {
			// Answers may still be on their way: the next input starts on
			// a new connection, so that it is judged on its own (the
			// engine runs more inputs while it minimizes a failing one).
			_ = rig.client.CloseNow()
			rig.client = nil
		}
	})
	typ := websocket.MessageText
	if binary {
		typ = websocket.MessageBinary
	}
	ctx, cancel := context.WithTimeout(context.Background(), fuzzWait)
	defer cancel()
	if err := rig.client.Write(ctx, typ, data); err != nil {
		t.Fatalf("write: %v", err)
	}

	if len(data) > fuzzMaxMessage || (!binary && !utf8.Valid(data)) {
		want := websocket.StatusMessageTooBig
		if len(data) <= fuzzMaxMessage {
			// RFC 6455, section 8.1: text that is not UTF-8 fails the
			// connection. Were it answered, its bytes could reach other
			// clients (in an echoed id, or a raw JSON payload broadcast to
			// a room), whose browsers would then fail their connections.
			want = websocket.StatusInvalidFramePayloadData
		}
		// The sentinel goes too (its write may fail once the server has
		// closed): an answer to it means the connection was served on.
		sentinel := rig.sentinel()
		_ = rig.client.Write(ctx, websocket.MessageText, sentinelFrame(sentinel))
		rig.expectClose(t, ctx, want, sentinel)
		rig.checkErrors(t)
		rig.checkFreshClient(t)
		return
	}

	sentinel := rig.sentinel()
	if err := rig.client.Write(ctx, websocket.MessageText, sentinelFrame(sentinel)); err != nil {
		t.Fatalf("the connection did not survive the input: write: %v", err)
	}
	answers := rig.readUntilSentinel(t, ctx, sentinel)

	if len(answers) == 0 {
		t.Fatalf("no answer to the input")
	}
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	switch {
	case binary:
		expectOnlyError(t, answers, "unsupported")
	case !json.Valid(data) || len(trimmed) == 0 || trimmed[0] != '{':
		expectOnlyError(t, answers, typed.CodeBadRequest)
	}
	rig.checkErrors(t)
	if rig.inputs%fuzzFreshEvery == 1 {
		rig.checkFreshClient(t)
	}
}

// sentinel returns a marker for the current input that the fuzzer cannot
// produce by chance.
func (rig *frameRig) sentinel() string { return fmt.Sprintf("%s-%d", rig.nonce, rig.inputs) }

// sentinelFrame is an echo request whose answer marks the end of the answers
// to the input sent before it.
func sentinelFrame(sentinel string) []byte {
	return fmt.Appendf(nil, `{"type":"echo","payload":%q,"id":%q}`, sentinel, sentinel)
}

// wireEnvelope is an envelope as the client reads it.
type wireEnvelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	ID      json.RawMessage `json:"id"`
}

type wireError struct {
	Code    *string `json:"code"`
	Message *string `json:"message"`
}

// readUntilSentinel reads frames until the echo of the sentinel and returns
// the answers before it: every frame but room messages, which a broadcast
// from an earlier input may still be delivering.
func (rig *frameRig) readUntilSentinel(t *testing.T, ctx context.Context, sentinel string) []wireEnvelope {
	t.Helper()
	var answers []wireEnvelope
	for {
		e := readEnvelope(t, ctx, rig.client)
		if e.Type == "echo" && string(e.ID) == `"`+sentinel+`"` {
			if string(e.Payload) != `"`+sentinel+`"` {
				t.Fatalf("sentinel echoed with payload %s", e.Payload)
			}
			return answers
		}
		if e.Type != "room.message" {
			answers = append(answers, e)
		}
	}
}

// readEnvelope reads one frame, which must be a valid UTF-8 text frame
// holding one JSON object with a type; an error envelope must carry a code
// and a message.
func readEnvelope(t *testing.T, ctx context.Context, c *websocket.Conn) wireEnvelope {
	t.Helper()
	typ, frame, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("the connection did not survive the input: read: %v", err)
	}
	if typ != websocket.MessageText {
		t.Fatalf("server sent a binary frame: %q", frame)
	}
	if !utf8.Valid(frame) {
		t.Fatalf("server sent a text frame that is not valid UTF-8: %q", frame)
	}
	var e wireEnvelope
	if err := json.Unmarshal(frame, &e); err != nil || e.Type == "" {
		t.Fatalf("server sent %q, not one envelope (%v)", frame, err)
	}
	if e.Type == "error" {
		var p wireError
		if err := json.Unmarshal(e.Payload, &p); err != nil || p.Code == nil || *p.Code == "" || p.Message == nil {
			t.Fatalf("error envelope without code and message: %q", frame)
		}
	}
	return e
}

// expectOnlyError checks that the answers are one error envelope with code.
func expectOnlyError(t *testing.T, answers []wireEnvelope, code string) {
	t.Helper()
	if len(answers) != 1 || answers[0].Type != "error" {
		t.Fatalf("answers %+v, want one error %q", answers, code)
	}
	var p wireError
	_ = json.Unmarshal(answers[0].Payload, &p)
	if *p.Code != code {
		t.Fatalf("error code %q (%s), want %q", *p.Code, *p.Message, code)
	}
}

// expectClose reads until the connection ends, which must be with a close
// frame carrying want, and forgets the client. The echo of sentinel, sent
// after the input, must not come.
func (rig *frameRig) expectClose(t *testing.T, ctx context.Context, want websocket.StatusCode, sentinel string) {
	t.Helper()
	c := rig.client
	rig.client = nil
	defer c.CloseNow()
	for {
		_, frame, err := c.Read(ctx)
		if err == nil {
			var e wireEnvelope
			if json.Unmarshal(frame, &e) != nil || e.Type == "" {
				t.Fatalf("server sent %q, not one envelope", frame)
			}
			if e.Type == "echo" && string(e.ID) == `"`+sentinel+`"` {
				t.Fatalf("the server went on serving the connection, want close %d", want)
			}
			continue
		}
		if got := websocket.CloseStatus(err); got != want {
			t.Fatalf("connection ended with %v (status %d), want close %d", err, got, want)
		}
		return
	}
}

// checkErrors fails on any error OnError received but the application
// handler's own panic: a panic anywhere else is Troupe's.
func (rig *frameRig) checkErrors(t *testing.T) {
	t.Helper()
	rig.mu.Lock()
	errs := rig.errs
	rig.errs = nil
	rig.mu.Unlock()
	for _, err := range errs {
		var pe *typed.PanicError
		if errors.As(err, &pe) && pe.Type == "boom" && pe.Value == fuzzPanic {
			continue
		}
		t.Errorf("OnError received %v", err)
	}
}

func (rig *frameRig) dial(t *testing.T) *websocket.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzWait)
	defer cancel()
	c, _, err := websocket.Dial(ctx, rig.url, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c.SetReadLimit(1 << 20)
	return c
}

// checkFreshClient checks that a new connection gets echo, join, a publish
// to itself and leave served.
func (rig *frameRig) checkFreshClient(t *testing.T) {
	t.Helper()
	c := rig.dial(t)
	defer c.CloseNow()
	ctx, cancel := context.WithTimeout(context.Background(), fuzzWait)
	defer cancel()
	room := fmt.Sprintf("fresh-%s-%d", rig.nonce, rig.inputs)
	steps := []struct{ send, want, payload string }{
		{`{"type":"echo","payload":"fresh"}`, "echo", `"fresh"`},
		{`{"type":"room.join","payload":{"room":"` + room + `"}}`, "room.joined", `{"room":"` + room + `"}`},
		{`{"type":"room.publish","payload":{"room":"` + room + `","body":"hi"}}`, "room.message", `{"room":"` + room + `","body":"hi"}`},
		{`{"type":"room.leave","payload":{"room":"` + room + `"}}`, "room.left", `{"room":"` + room + `"}`},
	}
	for _, s := range steps {
		if err := c.Write(ctx, websocket.MessageText, []byte(s.send)); err != nil {
			t.Fatalf("fresh client: write %s: %v", s.send, err)
		}
		for {
			e := readEnvelope(t, ctx, c)
			if e.Type == "room.published" {
				continue // the publish's own acknowledgement, in either order with the message
			}
			if e.Type != s.want || string(e.Payload) != s.payload {
				t.Fatalf("fresh client: sent %s, got %s %s, want %s %s", s.send, e.Type, e.Payload, s.want, s.payload)
			}
			break
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}
