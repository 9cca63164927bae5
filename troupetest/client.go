package troupetest

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe"
)

// Client is one connection to a Troupe server, as a client application
// would hold it: it sends envelopes ({"type", "payload", "id"}) and queues
// every message the server sends, in order, until the test takes them
// with Expect or Request.
//
// A Client fails the test it was created for (t.Fatalf) when something
// does not arrive in time, arrives in another form than expected, or when
// the connection fails; call its methods from that test's goroutine. It is
// closed at the test's cleanup if the test did not close it.
type Client struct {
	t    testing.TB
	name string // where it is connected, for failure messages
	conn endpoint

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change below
	queue   []message     // arrived, not yet taken
	ended   bool          // the connection has ended
	code    int           // how it ended
	reason  string
	err     error
	lastID  uint64 // of Request
}

// endpoint is the transport under a Client.
type endpoint interface {
	write(data []byte) error
	// close closes with a handshake and returns once the connection has
	// ended.
	close(code int, reason string) error
	// closeNow drops the connection and returns once every goroutine
	// serving it has returned.
	closeNow()
}

// message is one message from the server, decoded if it is an envelope.
type message struct {
	data []byte
	env  envelope
	ok   bool // data is an envelope
}

type envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	ID      json.RawMessage `json:"id"`
}

func newClient(t testing.TB, name string) *Client {
	return &Client{t: t, name: name, changed: make(chan struct{})}
}

func (c *Client) notifyLocked() {
	close(c.changed)
	c.changed = make(chan struct{})
}

// deliver queues a message from the server.
func (c *Client) deliver(data []byte, binary bool) {
	m := message{data: data}
	m.ok = !binary && json.Unmarshal(data, &m.env) == nil && m.env.Type != ""
	c.mu.Lock()
	c.queue = append(c.queue, m)
	c.notifyLocked()
	c.mu.Unlock()
}

// end records how the connection ended; only the first call counts.
func (c *Client) end(code int, reason string, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return
	}
	c.ended, c.code, c.reason, c.err = true, code, reason, err
	c.notifyLocked()
}

// waitFor waits until cond, called with c.mu held, is true, or the
// connection has ended (ended), or time is up (!ok).
func (c *Client) waitFor(cond func() bool) (ok, ended bool) {
	deadline := time.NewTimer(wait)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		done, ended, ch := cond(), c.ended, c.changed
		c.mu.Unlock()
		if done {
			return true, false
		}
		if ended {
			return false, true
		}
		select {
		case <-ch:
		case <-deadline.C:
			return false, false
		}
	}
}

// Send sends {"type": typ, "payload": payload} (no payload if nil) with no
// id, so the server sends no answer of its own (no empty "reply"). It fails
// the test if payload does not encode or the write fails.
func (c *Client) Send(typ string, payload any) {
	c.t.Helper()
	c.send(typ, payload, nil)
}

func (c *Client) send(typ string, payload any, id any) {
	c.t.Helper()
	e := map[string]any{"type": typ}
	if payload != nil {
		e["payload"] = payload
	}
	if id != nil {
		e["id"] = id
	}
	data, err := json.Marshal(e)
	if err != nil {
		c.t.Fatalf("troupetest: %s: encode %q: %v", c.name, typ, err)
	}
	if err := c.conn.write(data); err != nil {
		c.t.Fatalf("troupetest: %s: send %q: %v", c.name, typ, err)
	}
}

// Request sends {"type": typ, "payload": payload, "id": <a new id>} and
// waits for the server's answer with that id: a handler's reply (Reply,
// HandleRequest), room.joined and the like, or the empty
// {"type":"reply"} of a handler that answered nothing. The answer's
// payload is decoded into reply unless reply is nil or the payload is
// empty. An error envelope is returned as a *troupe.ReplyError with its
// code and message.
//
// Whatever else arrives meanwhile stays queued, in order, for Expect. If
// no answer arrives in time or the connection ends first, Request fails the
// test.
func (c *Client) Request(typ string, payload any, reply any) error {
	c.t.Helper()
	c.mu.Lock()
	c.lastID++
	id := "troupetest-" + strconv.FormatUint(c.lastID, 10)
	c.mu.Unlock()
	c.send(typ, payload, id)

	var answer envelope
	ok, ended := c.waitFor(func() bool {
		for i, m := range c.queue {
			var got string
			if m.ok && json.Unmarshal(m.env.ID, &got) == nil && got == id {
				answer = m.env
				c.queue = append(c.queue[:i:i], c.queue[i+1:]...)
				return true
			}
		}
		return false
	})
	if !ok {
		c.t.Fatalf("troupetest: %s: no answer to %q (id %q) %s; arrived meanwhile: %s", c.name, typ, id, c.why(ended), c.pending())
	}
	if answer.Type == "error" {
		var e struct{ Code, Message string }
		if err := json.Unmarshal(answer.Payload, &e); err != nil || e.Code == "" {
			c.t.Fatalf("troupetest: %s: %q answered with an error envelope without a code: %s", c.name, typ, answer.Payload)
		}
		return &troupe.ReplyError{Code: e.Code, Message: e.Message}
	}
	if reply != nil && len(answer.Payload) > 0 {
		if err := json.Unmarshal(answer.Payload, reply); err != nil {
			c.t.Fatalf("troupetest: %s: answer %q to %q: decode %s into %T: %v", c.name, answer.Type, typ, answer.Payload, reply, err)
		}
	}
	return nil
}

// Expect takes the next message the server sent, waiting for it, and
// returns its payload, decoded into into as well unless into is nil. The
// message must be an envelope of type typ: anything else, or nothing in
// time, fails the test and shows what arrived.
//
// Expect is strict about order: every message is taken in the order the
// server sent it, apart from the answers Request took. So a test says
// exactly what a client sees, presence.diff before the room.message it
// precedes included; messages the test does not care about are taken with
// Expect too (into nil).
func (c *Client) Expect(typ string, into any) json.RawMessage {
	c.t.Helper()
	var m message
	ok, ended := c.waitFor(func() bool {
		if len(c.queue) == 0 {
			return false
		}
		m = c.queue[0]
		c.queue[0] = message{}
		c.queue = c.queue[1:]
		return true
	})
	if !ok {
		c.t.Fatalf("troupetest: %s: want %q, got nothing: %s", c.name, typ, c.why(ended))
	}
	if !m.ok || m.env.Type != typ {
		c.t.Fatalf("troupetest: %s: want %q, got %s", c.name, typ, show(m.data))
	}
	if into != nil {
		if err := json.Unmarshal(m.env.Payload, into); err != nil {
			c.t.Fatalf("troupetest: %s: %q payload %s does not decode into %T: %v", c.name, typ, show(m.env.Payload), into, err)
		}
	}
	return m.env.Payload
}

// Close closes the connection normally (1000) and waits until it has
// ended. Messages that arrived before stay queued for Expect.
func (c *Client) Close() {
	c.t.Helper()
	c.mu.Lock()
	ended := c.ended
	c.mu.Unlock()
	if ended {
		c.conn.closeNow()
		return
	}
	_ = c.conn.close(1000, "")
	if ok, ended := c.waitFor(func() bool { return false }); !ok && !ended {
		c.t.Fatalf("troupetest: %s: connection still open %v after Close", c.name, wait)
	}
	c.conn.closeNow()
}

// ExpectClose waits for the server to close the connection and returns the
// close code and reason; 1006 (abnormal closure) if the connection ended
// without a close frame, as when the server dropped it. It fails the test if
// the connection is still open after a few seconds. Messages that arrived
// before the close stay queued for Expect.
func (c *Client) ExpectClose() (code int, reason string) {
	c.t.Helper()
	if ok, ended := c.waitFor(func() bool { return false }); !ok && !ended {
		c.t.Fatalf("troupetest: %s: connection still open after %v; arrived meanwhile: %s", c.name, wait, c.pending())
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.code, c.reason
}

// cleanup runs at the end of the test.
func (c *Client) cleanup() { c.conn.closeNow() }

// why says why a wait ended without what it waited for.
func (c *Client) why(ended bool) string {
	if !ended {
		return "within " + wait.String()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return fmt.Sprintf("before the connection ended (close %d %q: %v)", c.code, c.reason, c.err)
}

// pending describes the messages queued but not taken.
func (c *Client) pending() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.queue) == 0 {
		return "nothing"
	}
	var b strings.Builder
	for i, m := range c.queue {
		if i == 5 {
			fmt.Fprintf(&b, " and %d more", len(c.queue)-i)
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(show(m.data))
	}
	return b.String()
}

// show quotes a message for a failure message, shortened.
func show(data []byte) string {
	const max = 300
	if len(data) > max {
		return string(data[:max]) + "…"
	}
	return string(data)
}
