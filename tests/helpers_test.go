package tests

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
)

// waitTimeout bounds every wait for something the server or a client should
// do. It only turns a hang into a failure; nothing is expected to take long.
const waitTimeout = 10 * time.Second

// clientHeader names each test client in its upgrade request, so the
// server-side session of a client can be found from the hooks.
const clientHeader = "X-Test-Client"

// envelope is a message as a client sees it on the wire. It is decoded here
// rather than with the library's own type, so the tests check the wire
// format itself.
type envelope struct {
	Type    string          `json:"type"`
	Payload json.RawMessage `json:"payload"`
	ID      json.RawMessage `json:"id"`
	Room    string          `json:"room"`
}

// errorPayload is the payload of an {"type":"error"} envelope.
type errorPayload struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type closeEvent struct {
	s      *troupe.Session
	code   int
	reason string
}

type errorEvent struct {
	s   *troupe.Session
	err error
}

// recorder keeps what the server's OnOpen, OnClose and OnError hooks saw.
// changed is closed and replaced on every event, so waiting for a
// condition needs no polling.
type recorder struct {
	mu      sync.Mutex
	changed chan struct{}
	opens   []*troupe.Session
	closes  []closeEvent
	errs    []errorEvent
}

func newRecorder() *recorder { return &recorder{changed: make(chan struct{})} }

func (r *recorder) notifyLocked() {
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *recorder) onOpen(s *troupe.Session) {
	r.mu.Lock()
	r.opens = append(r.opens, s)
	r.notifyLocked()
	r.mu.Unlock()
}

func (r *recorder) onClose(s *troupe.Session, code int, reason string) {
	r.mu.Lock()
	r.closes = append(r.closes, closeEvent{s, code, reason})
	r.notifyLocked()
	r.mu.Unlock()
}

func (r *recorder) onError(s *troupe.Session, err error) {
	r.mu.Lock()
	r.errs = append(r.errs, errorEvent{s, err})
	r.notifyLocked()
	r.mu.Unlock()
}

// waitFor waits until cond, called with the recorder locked, is true.
func (r *recorder) waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		ok := cond()
		ch := r.changed
		r.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// session waits for the session of the client named name to open.
func (r *recorder) session(t *testing.T, name string) *troupe.Session {
	t.Helper()
	var found *troupe.Session
	r.waitFor(t, "session of "+name+" to open", func() bool {
		for _, s := range r.opens {
			if s.Header().Get(clientHeader) == name {
				found = s
				return true
			}
		}
		return false
	})
	return found
}

// closesOf returns the OnClose calls for the session with the given ID.
func (r *recorder) closesOf(id string) []closeEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []closeEvent
	for _, c := range r.closes {
		if c.s.ID() == id {
			out = append(out, c)
		}
	}
	return out
}

// waitClose waits for the OnClose of s and returns it.
func (r *recorder) waitClose(t *testing.T, s *troupe.Session) closeEvent {
	t.Helper()
	var ev closeEvent
	r.waitFor(t, "OnClose of "+s.Header().Get(clientHeader), func() bool {
		for _, c := range r.closes {
			if c.s == s {
				ev = c
				return true
			}
		}
		return false
	})
	return ev
}

// errorsOf returns the errors OnError received for s (nil: server-level).
func (r *recorder) errorsOf(s *troupe.Session) []error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []error
	for _, e := range r.errs {
		if e.s == s {
			out = append(out, e.err)
		}
	}
	return out
}

func (r *recorder) counts() (opens, closes int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.opens), len(r.closes)
}

// testServer is a troupe.Server behind an httptest server on 127.0.0.1.
type testServer struct {
	srv *troupe.Server
	ts  *httptest.Server
	url string
	rec *recorder
}

// serverOption adjusts the httptest server before it starts.
type serverOption func(*httptest.Server)

// smallSendBuffers caps the kernel send buffer of every accepted connection,
// so that a client that stops reading fills the path between server and
// client with some hundred KiB instead of several MiB: the server's
// outbound queue then backs up (and overflows) after a few hundred
// messages, and the test moves and decodes less data.
func smallSendBuffers() serverOption {
	return func(ts *httptest.Server) {
		ts.Listener = &sendBufferListener{Listener: ts.Listener, size: 16 << 10}
	}
}

type sendBufferListener struct {
	net.Listener
	size int
}

func (l *sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(l.size)
	}
	return c, err
}

// startServer builds a server from cfg, with the lifecycle hooks recorded
// (cfg's own hooks still run), and stops it when the test ends.
func startServer(t *testing.T, cfg troupe.Config, opts ...serverOption) *testServer {
	t.Helper()
	if cfg.Settings.RateLimit == 0 {
		// These tests send in bursts far above the default rate limit; the
		// rate limit has tests of its own.
		cfg.Settings.RateLimit = -1
	}
	rec := newRecorder()
	userOpen, userClose, userError := cfg.OnOpen, cfg.OnClose, cfg.OnError
	cfg.OnOpen = func(s *troupe.Session) {
		rec.onOpen(s)
		if userOpen != nil {
			userOpen(s)
		}
	}
	cfg.OnClose = func(s *troupe.Session, code int, reason string) {
		rec.onClose(s, code, reason)
		if userClose != nil {
			userClose(s, code, reason)
		}
	}
	cfg.OnError = func(s *troupe.Session, err error) {
		rec.onError(s, err)
		if userError != nil {
			userError(s, err)
		}
	}
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatalf("troupe.New: %v", err)
	}
	ts := httptest.NewUnstartedServer(srv)
	for _, o := range opts {
		o(ts)
	}
	ts.Start()
	t.Cleanup(func() {
		_ = srv.Close()
		ts.Close()
	})
	return &testServer{srv: srv, ts: ts, url: "ws" + strings.TrimPrefix(ts.URL, "http"), rec: rec}
}

// dialOptions are the options every test client uses: named by clientHeader
// and sharing the test server's HTTP client, whose idle connections the
// httptest server closes when it stops.
func (h *testServer) dialOptions(name string, subprotocols ...string) *websocket.DialOptions {
	hdr := http.Header{}
	hdr.Set(clientHeader, name)
	return &websocket.DialOptions{HTTPClient: h.ts.Client(), HTTPHeader: hdr, Subprotocols: subprotocols}
}

// tryDial dials with opts and returns the HTTP status of a refused upgrade.
func (h *testServer) tryDial(opts *websocket.DialOptions) (*websocket.Conn, int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, h.url, opts)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	return ws, status, err
}

// expectRefused dials with opts and checks that the upgrade is refused with
// HTTP status want.
func (h *testServer) expectRefused(t *testing.T, what string, opts *websocket.DialOptions, want int) {
	t.Helper()
	ws, status, err := h.tryDial(opts)
	if err == nil {
		_ = ws.CloseNow()
		t.Errorf("%s: upgrade accepted, want HTTP %d", what, want)
		return
	}
	if status != want {
		t.Errorf("%s: HTTP %d (%v), want %d", what, status, err, want)
	}
}

// dial connects a client named name and closes it when the test ends.
func (h *testServer) dial(t *testing.T, name string, subprotocols ...string) *client {
	t.Helper()
	return h.dialWith(t, name, h.dialOptions(name, subprotocols...))
}

func (h *testServer) dialWith(t *testing.T, name string, opts *websocket.DialOptions) *client {
	t.Helper()
	ws, status, err := h.tryDial(opts)
	if err != nil {
		t.Fatalf("dial %s: %v (HTTP %d)", name, err, status)
	}
	// Batched (ndjson) frames and large test messages exceed the client's
	// default 32 KiB limit.
	ws.SetReadLimit(64 << 20)
	c := &client{name: name, ws: ws, changed: make(chan struct{}), done: make(chan struct{})}
	t.Cleanup(c.shutdown)
	return c
}

// client is one test WebSocket client. Reading is opt-in (startReading): a
// client that never reads is how tests model a stalled consumer, and
// coder/websocket answers pings only while a read is in progress.
type client struct {
	name string
	ws   *websocket.Conn

	mu      sync.Mutex
	changed chan struct{}
	frames  [][]byte
	taken   int
	reading bool
	done    chan struct{} // closed when the read loop has ended
	readErr error         // what ended the read loop
}

// startReading reads every frame into the client's buffer until the
// connection ends.
func (c *client) startReading() {
	c.mu.Lock()
	c.reading = true
	c.mu.Unlock()
	go func() {
		defer close(c.done)
		for {
			_, data, err := c.ws.Read(context.Background())
			c.mu.Lock()
			if err != nil {
				c.readErr = err
			} else {
				c.frames = append(c.frames, data)
			}
			close(c.changed)
			c.changed = make(chan struct{})
			c.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
}

func (c *client) shutdown() {
	_ = c.ws.CloseNow()
	c.mu.Lock()
	reading := c.reading
	c.mu.Unlock()
	if reading {
		<-c.done
	}
}

// next returns the next frame not yet returned. It fails the test if the
// connection ends or nothing arrives in time.
func (c *client) next(t *testing.T) []byte {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		if c.taken < len(c.frames) {
			f := c.frames[c.taken]
			c.frames[c.taken] = nil
			c.taken++
			c.mu.Unlock()
			return f
		}
		err, ch := c.readErr, c.changed
		c.mu.Unlock()
		if err != nil {
			t.Fatalf("%s: connection ended while waiting for a message: %v", c.name, err)
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: no message within %v", c.name, waitTimeout)
		}
	}
}

// nextEnvelope returns the next frame decoded as one envelope.
func (c *client) nextEnvelope(t *testing.T) envelope {
	t.Helper()
	return decodeEnvelope(t, c.next(t))
}

// expect returns the next envelope, which must have type typ.
func (c *client) expect(t *testing.T, typ string) envelope {
	t.Helper()
	e := c.nextEnvelope(t)
	if e.Type != typ {
		t.Fatalf("%s: got envelope %q (payload %.200s), want %q", c.name, e.Type, e.Payload, typ)
	}
	return e
}

// received returns how many frames arrived so far.
func (c *client) received() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.frames)
}

// waitReceived waits until at least n frames arrived.
func (c *client) waitReceived(t *testing.T, n int) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		got, err, ch := len(c.frames), c.readErr, c.changed
		c.mu.Unlock()
		if got >= n {
			return
		}
		if err != nil {
			t.Fatalf("%s: connection ended after %d of %d frames: %v", c.name, got, n, err)
		}
		select {
		case <-ch:
		case <-deadline.C:
			t.Fatalf("%s: %d of %d frames within %v", c.name, got, n, waitTimeout)
		}
	}
}

// waitEnd waits for the read loop to end and returns the frames that arrived
// but were not taken, and the error that ended it.
func (c *client) waitEnd(t *testing.T) ([][]byte, error) {
	t.Helper()
	select {
	case <-c.done:
	case <-time.After(waitTimeout):
		t.Fatalf("%s: connection still open after %v", c.name, waitTimeout)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	rest := c.frames[c.taken:]
	c.taken = len(c.frames)
	return rest, c.readErr
}

// write sends one text frame.
func (c *client) write(t *testing.T, data []byte) {
	t.Helper()
	if err := c.writeErr(data); err != nil {
		t.Fatalf("%s: write: %v", c.name, err)
	}
}

func (c *client) writeErr(data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return c.ws.Write(ctx, websocket.MessageText, data)
}

// send writes the envelope {"type": typ, "payload": payload}.
func (c *client) send(t *testing.T, typ string, payload any) {
	t.Helper()
	c.write(t, mustEnvelope(t, typ, payload, nil))
}

// join makes the client a member of room through the "join" handler that
// registerJoin installs, and waits until the join is in effect.
func (c *client) join(t *testing.T, room string) {
	t.Helper()
	c.send(t, "join", joinMsg{Room: room})
	e := c.expect(t, "joined")
	var got string
	if err := json.Unmarshal(e.Payload, &got); err != nil || got != room {
		t.Fatalf("%s: joined payload %s, want %q", c.name, e.Payload, room)
	}
}

type joinMsg struct {
	Room string `json:"room"`
}

// registerJoin installs the "join" handler the tests use to put clients in
// rooms: it replies "joined" once the join is in effect.
func registerJoin(srv *troupe.Server) {
	troupe.Handle(srv, "join", func(c *troupe.Context, m joinMsg) error {
		if err := c.Join(m.Room); err != nil {
			return err
		}
		return c.Reply("joined", m.Room)
	})
}

// mustEnvelope encodes an envelope the way a client would write it.
func mustEnvelope(t *testing.T, typ string, payload any, id json.RawMessage) []byte {
	t.Helper()
	e := map[string]any{"type": typ}
	if payload != nil {
		e["payload"] = payload
	}
	if id != nil {
		e["id"] = id
	}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("encode envelope: %v", err)
	}
	return b
}

func decodeEnvelope(t *testing.T, data []byte) envelope {
	t.Helper()
	var e envelope
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("frame is not one envelope: %v: %.200q", err, data)
	}
	return e
}

func decodePayload[T any](t *testing.T, e envelope) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(e.Payload, &v); err != nil {
		t.Fatalf("payload of %q: %v: %s", e.Type, err, e.Payload)
	}
	return v
}

// afterTimeout bounds a select that waits for an event.
func afterTimeout() <-chan time.Time { return time.After(waitTimeout) }

// eventually waits until cond is true, for state the server exposes only
// by polling (Session.IsOpen, Session.QueueLen).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// closeCode returns the close status a client read error carries, or an
// explanation of why it carries none.
func closeCode(err error) (websocket.StatusCode, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return ce.Code, ce.Reason
	}
	return -1, fmt.Sprintf("no close frame (%v)", err)
}
