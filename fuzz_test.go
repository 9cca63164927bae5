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
	ts     *httptest.Server
	url    string
	nonce  string // makes the sentinel unguessable for the fuzzer
	client *websocket.Conn
	inputs int

	mu   sync.Mutex
	errs []error // what OnError received and the rig has not checked yet
}

// fuzzRoom is the room a room protocol request names.
type fuzzRoom struct {
	Room string `json:"room"`
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
			// Thousands of inputs a second are the point here.
			RateLimit: -1,
		},
		RoomProtocol: true,
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
	troupe.Handle(srv, "fail", func(*troupe.Context, struct{}) error {
		return errors.New("plain failure")
	})
	troupe.Handle(srv, "refuse", func(*troupe.Context, struct{}) error {
		return troupe.NewError("forbidden", "not allowed")
	})
	troupe.Handle(srv, "boom", func(*troupe.Context, struct{}) error {
		panic(fuzzPanic)
	})
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
// WebSocket connection to a server with typed handlers and the built-in
// room protocol. Whatever the server sends back must be valid UTF-8 text
// frames holding one JSON envelope each, every error envelope with a code
// and a message; text that is not a JSON object is answered with exactly
// one bad_request error, a binary frame with exactly one "unsupported"
// error, a frame over the size limit with close 1009, and text that is not
// UTF-8 with close 1007. The connection must keep working after every other
// input, no panic but the application's own may reach OnError, and a new
// client must still be served (echo, join, publish to itself, leave).
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
	markers := [][]byte{sentinelFrame(sentinel)}
	if room, ok := roomOf(data); ok {
		// A room protocol request may be answered by its room actor, after
		// the echo: a request to the same room, answered in the room's
		// order, comes back after it.
		markers = append(markers, roomSentinelFrame(sentinel, room))
	}
	for _, m := range markers {
		if err := rig.client.Write(ctx, websocket.MessageText, m); err != nil {
			t.Fatalf("the connection did not survive the input: write: %v", err)
		}
	}
	answers := rig.readUntilSentinels(t, ctx, sentinel, len(markers))

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

// roomOf returns the room a room protocol request names, read the way the
// server reads the envelope.
func roomOf(data []byte) (string, bool) {
	env, err := typed.Decode(data)
	if err != nil || !strings.HasPrefix(env.Type, "room.") {
		return "", false
	}
	var m fuzzRoom
	if json.Unmarshal(env.Payload, &m) != nil {
		return "", false
	}
	return m.Room, true
}

// roomSentinelFrame asks room for its history (or gets not_member, or
// invalid_payload for a bad name), under an id that marks the answer.
func roomSentinelFrame(sentinel, room string) []byte {
	b, _ := json.Marshal(map[string]any{
		"type": "room.history", "id": sentinel + "-room",
		"payload": map[string]any{"room": room, "limit": 1},
	})
	return b
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

// readUntilSentinels reads frames until the answers to the n markers sent
// after the input (the echo, and the room request if there was one) and
// returns the answers to the input: every frame before them but room
// messages and presence diffs, which come from the rooms when they come.
func (rig *frameRig) readUntilSentinels(t *testing.T, ctx context.Context, sentinel string, n int) []wireEnvelope {
	t.Helper()
	var answers []wireEnvelope
	seen := 0
	waiting := func() string {
		return fmt.Sprintf("answer to the requests sent after the input (%d of %d answered: the echo, then the room.history for its room)", seen, n)
	}
	for seen < n {
		e := readEnvelope(t, ctx, rig.client, waiting)
		switch {
		case e.Type == "echo" && string(e.ID) == `"`+sentinel+`"`:
			if string(e.Payload) != `"`+sentinel+`"` {
				t.Fatalf("sentinel echoed with payload %s", e.Payload)
			}
			seen++
		case string(e.ID) == `"`+sentinel+`-room"`:
			seen++
		case e.Type == "room.message" || e.Type == "presence.diff":
		default:
			if seen > 0 && n > 1 && !fromRoom(e) {
				t.Fatalf("%s %s came after the answer to the next request", e.Type, e.Payload)
			}
			answers = append(answers, e)
		}
	}
	return answers
}

// fromRoom reports whether an answer may come from a room actor, and so
// after the echo that followed its request.
func fromRoom(e wireEnvelope) bool {
	return e.Type == "room.joined" || e.Type == "room.published" || e.Type == "room.history" || e.Type == "error"
}

// readEnvelope reads one frame, which must be a valid UTF-8 text frame
// holding one JSON object with a type; an error envelope must carry a code
// and a message. waiting says what was expected, should nothing come.
func readEnvelope(t *testing.T, ctx context.Context, c *websocket.Conn, waiting func() string) wireEnvelope {
	t.Helper()
	typ, frame, err := c.Read(ctx)
	if err != nil {
		t.Fatalf("no %s: read: %v", waiting(), err)
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
	steps := []struct {
		send, want string
		check      func(p json.RawMessage) bool
	}{
		{`{"type":"echo","payload":"fresh"}`, "echo", func(p json.RawMessage) bool { return string(p) == `"fresh"` }},
		{`{"type":"room.join","payload":{"room":"` + room + `"}}`, "room.joined", func(p json.RawMessage) bool {
			var m fuzzRoom
			return json.Unmarshal(p, &m) == nil && m.Room == room
		}},
		{`{"type":"room.publish","payload":{"room":"` + room + `","body":"hi"}}`, "room.message", func(p json.RawMessage) bool {
			var m struct {
				Room string          `json:"room"`
				Body json.RawMessage `json:"body"`
			}
			return json.Unmarshal(p, &m) == nil && m.Room == room && string(m.Body) == `"hi"`
		}},
		{`{"type":"room.leave","payload":{"room":"` + room + `"}}`, "room.left", func(p json.RawMessage) bool {
			var m fuzzRoom
			return json.Unmarshal(p, &m) == nil && m.Room == room
		}},
	}
	for _, s := range steps {
		if err := c.Write(ctx, websocket.MessageText, []byte(s.send)); err != nil {
			t.Fatalf("fresh client: write %s: %v", s.send, err)
		}
		e := readEnvelope(t, ctx, c, func() string { return "fresh client: answer to " + s.send })
		if e.Type != s.want || !s.check(e.Payload) {
			t.Fatalf("fresh client: sent %s, got %s %s, want %s", s.send, e.Type, e.Payload, s.want)
		}
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
}
