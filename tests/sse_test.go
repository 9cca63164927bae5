package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/typed"
)

// sseClient speaks the HTTP fallback by hand: the event stream down, POSTs
// up, as a browser's EventSource and fetch would.
type sseClient struct {
	name   string
	h      *testServer
	hc     *http.Client
	token  string
	body   io.ReadCloser
	events chan sseEvent
	ended  chan error
	quit   chan struct{} // closed when the test ends: the parser stops
	lastID string
}

func newSSEClient(t *testing.T, h *testServer, name string, hc *http.Client, body io.ReadCloser, buffered int) *sseClient {
	c := &sseClient{name: name, h: h, hc: hc, body: body, events: make(chan sseEvent, buffered), ended: make(chan error, 1), quit: make(chan struct{})}
	t.Cleanup(func() {
		close(c.quit)
		_ = c.body.Close()
	})
	c.read(body)
	return c
}

type sseEvent struct {
	event, id, data string
}

// httpURL is the server's URL with the fallback's query.
func (h *testServer) httpURL(query string) string {
	return "http" + strings.TrimPrefix(h.url, "ws") + "/?" + query
}

// sseRequest makes a request of the fallback, named like a test client.
func (h *testServer) sseRequest(t *testing.T, method, query, name string, body io.Reader, header http.Header) *http.Request {
	t.Helper()
	req, err := http.NewRequest(method, h.httpURL(query), body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set(clientHeader, name)
	return req
}

// openSSE opens a session of the fallback and starts reading its stream.
func (h *testServer) openSSE(t *testing.T, name string, hc *http.Client) *sseClient {
	t.Helper()
	return h.openSSEBuffered(t, name, hc, 4096)
}

// openSSEBuffered is openSSE with room for that many events not taken:
// past them, the client stops reading its stream.
func (h *testServer) openSSEBuffered(t *testing.T, name string, hc *http.Client, buffered int) *sseClient {
	t.Helper()
	if hc == nil {
		hc = h.ts.Client()
	}
	resp, err := hc.Do(h.sseRequest(t, http.MethodGet, "sse=open", name, nil, nil))
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		_ = resp.Body.Close()
		t.Fatalf("open: %s %q", resp.Status, resp.Header.Get("Content-Type"))
	}
	c := newSSEClient(t, h, name, hc, resp.Body, buffered)
	ev := c.next(t)
	if ev.event != "session" || len(ev.data) < 40 {
		t.Fatalf("first event %+v, want the session's token", ev)
	}
	c.token = ev.data
	return c
}

// read parses body's events into c.events until it ends.
func (c *sseClient) read(body io.Reader) {
	go func() {
		br := bufio.NewReader(body)
		var ev sseEvent
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				c.ended <- err
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "":
				if ev.data != "" || ev.event != "" {
					select {
					case c.events <- ev:
					case <-c.quit:
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
			default:
				f, v, _ := strings.Cut(line, ":")
				v = strings.TrimPrefix(v, " ")
				switch f {
				case "event":
					ev.event = v
				case "id":
					ev.id = v
				case "data":
					if ev.data != "" {
						ev.data += "\n"
					}
					ev.data += v
				}
			}
		}
	}()
}

func (c *sseClient) next(t *testing.T) sseEvent {
	t.Helper()
	select {
	case ev := <-c.events:
		if ev.id != "" {
			c.lastID = ev.id
		}
		return ev
	case err := <-c.ended:
		t.Fatalf("%s: stream ended: %v", c.name, err)
	case <-afterTimeout():
		t.Fatalf("%s: no event", c.name)
	}
	return sseEvent{}
}

// expect reads events until an envelope of type typ.
func (c *sseClient) expect(t *testing.T, typ string) envelope {
	t.Helper()
	for {
		ev := c.next(t)
		if ev.event != "" {
			t.Fatalf("%s: event %q (%s), want an envelope %s", c.name, ev.event, ev.data, typ)
		}
		if e := decodeEnvelope(t, []byte(ev.data)); e.Type == typ {
			return e
		}
	}
}

// post POSTs body to the session and returns the status.
func (c *sseClient) post(t *testing.T, body string, header http.Header) int {
	t.Helper()
	return c.h.sseDo(t, c.hc, c.h.sseRequest(t, http.MethodPost, "sse="+c.token, c.name, strings.NewReader(body), header))
}

// sseDo makes req and returns its status, the body read and closed.
func (h *testServer) sseDo(t *testing.T, hc *http.Client, req *http.Request) int {
	t.Helper()
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

func (c *sseClient) echo(t *testing.T, text string) {
	t.Helper()
	if code := c.post(t, `{"type":"bench.echo","payload":`+strconv.Quote(text)+`}`, nil); code != http.StatusNoContent {
		t.Fatalf("%s: echo POST: %d", c.name, code)
	}
	if e := c.expect(t, "bench.echo"); string(e.Payload) != strconv.Quote(text) {
		t.Fatalf("%s: echo %s, want %q", c.name, e.Payload, text)
	}
}

// TestSSEBattery is the robustness battery against the fallback's
// endpoints: bad input gets the answer a WebSocket gets, or a clear HTTP
// status, and the session (and the server) go on serving.
func TestSSEBattery(t *testing.T) {
	h := startServer(t, benchConfig(troupe.Settings{}))
	registerBench(h.srv)
	const maxSize = 65536

	for _, tc := range []struct{ name, body, code string }{
		{"invalid-json", `{"type":"bench.echo","payload":`, typed.CodeBadRequest},
		{"not-an-object", `[1,2,3]`, typed.CodeBadRequest},
		{"unknown-type", `{"type":"no.such.type","payload":{}}`, typed.CodeUnknownType},
		{"wrong-field-types", `{"type":"room.publish","payload":{"room":5,"body":[]}}`, typed.CodeInvalidPayload},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := h.openSSE(t, "sse-"+tc.name, nil)
			if code := c.post(t, tc.body, nil); code != http.StatusNoContent {
				t.Fatalf("POST: %d, want 204 (the answer comes on the stream)", code)
			}
			if p := decodePayload[errorPayload](t, c.expect(t, "error")); p.Code != tc.code || p.Message == "" {
				t.Errorf("error %+v, want code %q with a message", p, tc.code)
			}
			c.echo(t, "still-there")
		})
	}

	t.Run("several-per-post", func(t *testing.T) {
		c := h.openSSE(t, "sse-batch", nil)
		var b strings.Builder
		for i := range 5 {
			fmt.Fprintf(&b, `{"type":"bench.echo","payload":%d}`+"\n", i)
		}
		if code := c.post(t, b.String(), nil); code != http.StatusNoContent {
			t.Fatalf("POST: %d", code)
		}
		for i := range 5 {
			if e := c.expect(t, "bench.echo"); string(e.Payload) != strconv.Itoa(i) {
				t.Fatalf("echo %d: %s, in order", i, e.Payload)
			}
		}
	})

	t.Run("oversized-post", func(t *testing.T) {
		c := h.openSSE(t, "sse-big", nil)
		big := `{"type":"bench.echo","payload":"` + strings.Repeat("x", maxSize) + `"}`
		if code := c.post(t, big, nil); code != http.StatusRequestEntityTooLarge {
			t.Fatalf("POST of %d bytes: %d, want 413", len(big), code)
		}
		c.echo(t, "after-413")
	})

	t.Run("unknown-token", func(t *testing.T) {
		c := h.openSSE(t, "sse-gone", nil)
		s := h.rec.session(t, "sse-gone")
		if code := h.sseDo(t, c.hc, h.sseRequest(t, http.MethodDelete, "sse="+c.token, c.name, nil, nil)); code != http.StatusNoContent {
			t.Fatalf("DELETE: %d", code)
		}
		if ev := h.rec.waitClose(t, s); ev.code != troupe.CloseNormal {
			t.Errorf("OnClose %d after the client's DELETE, want 1000", ev.code)
		}
		// A closed session's token and a made-up one get the same answer,
		// byte for byte: nothing tells them apart.
		answers := map[string]string{}
		for _, token := range []string{c.token, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "x"} {
			for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
				resp, err := c.hc.Do(h.sseRequest(t, method, "sse="+token, c.name, strings.NewReader(`{"type":"bench.echo"}`), nil))
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusNotFound {
					t.Errorf("%s with token %q: %d, want 404", method, token, resp.StatusCode)
				}
				answers[string(body)] = token
			}
		}
		if len(answers) != 1 {
			t.Errorf("the 404s differ: %v", answers)
		}
	})

	t.Run("other-origin", func(t *testing.T) {
		c := h.openSSE(t, "sse-origin", nil)
		evil := http.Header{"Origin": {"http://evil.example"}}
		if code := c.post(t, `{"type":"bench.echo","payload":"x"}`, evil); code != http.StatusForbidden {
			t.Errorf("POST from another origin: %d, want 403", code)
		}
		if code := h.sseDo(t, c.hc, h.sseRequest(t, http.MethodGet, "sse=open", "sse-origin-open", nil, evil)); code != http.StatusForbidden {
			t.Errorf("open from another origin: %d, want 403", code)
		}
		same := http.Header{"Origin": {"http://" + h.ts.Listener.Addr().String()}}
		if code := c.post(t, `{"type":"bench.echo","payload":"same"}`, same); code != http.StatusNoContent {
			t.Errorf("POST from the page's own origin: %d, want 204", code)
		}
		if e := c.expect(t, "bench.echo"); string(e.Payload) != `"same"` {
			t.Errorf("echo %s", e.Payload)
		}
	})

	t.Run("empty-post", func(t *testing.T) {
		c := h.openSSE(t, "sse-empty", nil)
		if code := c.post(t, "\n\n", nil); code != http.StatusBadRequest {
			t.Errorf("empty POST: %d, want 400", code)
		}
		c.echo(t, "after-empty")
	})
	checkFreshBenchClient(t, h, "sse-battery")
}

// A fallback session is a full session: Authorize runs on the request that
// opens it, OnOpen and OnClose run once each, and its connections are
// counted under transport="sse".
func TestSSESessionLifecycle(t *testing.T) {
	cfg := benchConfig(troupe.Settings{})
	cfg.Authorize = func(r *http.Request) (string, error) {
		if r.URL.Query().Get("token") != "good" {
			return "", errors.New("bad token")
		}
		return "ann", nil
	}
	h, reg := metricsServer(t, cfg)
	registerBench(h.srv)

	if code := h.sseDo(t, h.ts.Client(), h.sseRequest(t, http.MethodGet, "sse=open&token=bad", "refused", nil, nil)); code != http.StatusUnauthorized {
		t.Fatalf("open with a bad token: %d, want 401", code)
	}
	resp, err := h.ts.Client().Do(h.sseRequest(t, http.MethodGet, "sse=open&token=good", "ann", nil, nil))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("open: %v %v", resp, err)
	}
	c := newSSEClient(t, h, "ann", h.ts.Client(), resp.Body, 64)
	c.token = c.next(t).data
	s := h.rec.session(t, "ann")
	if s.Identity() != "ann" {
		t.Errorf("identity %q, want ann (from Authorize)", s.Identity())
	}
	c.echo(t, "hello")
	samples := scrape(t, reg)
	samples.expect(t, `troupe_connections_active{transport="sse"}`, 1)
	samples.expect(t, `troupe_connections_total{transport="sse"}`, 1)
	samples.expect(t, `troupe_connections_active{transport="websocket"}`, 0)

	// The stream drops; the session waits, and the client comes back with
	// the id of the last event it read: what was sent meanwhile arrives.
	_ = resp.Body.Close()
	<-c.ended
	for _, text := range []string{"while away", "while away 2"} {
		if err := s.Send("bench.echo", text); err != nil {
			t.Fatal(err)
		}
	}
	req := h.sseRequest(t, http.MethodGet, "sse="+c.token, "ann", nil, http.Header{"Last-Event-ID": {c.lastID}})
	resp2, err := c.hc.Do(req)
	if err != nil || resp2.StatusCode != http.StatusOK {
		t.Fatalf("resume: %v %v", resp2, err)
	}
	defer resp2.Body.Close()
	c.ended = make(chan error, 1)
	c.read(resp2.Body)
	if e := c.expect(t, "bench.echo"); string(e.Payload) != `"while away"` {
		t.Fatalf("first after the resume: %s", e.Payload)
	}
	if e := c.expect(t, "bench.echo"); string(e.Payload) != `"while away 2"` {
		t.Fatalf("second after the resume: %s", e.Payload)
	}
	c.echo(t, "back")

	// The server closes: a last "close" event carries the code.
	_ = s.CloseWith(4001, "bye")
	ev := c.next(t)
	if ev.event != "close" || !strings.Contains(ev.data, `"code":4001`) {
		t.Fatalf("last event %+v, want close 4001", ev)
	}
	if ev := h.rec.waitClose(t, s); ev.code != 4001 {
		t.Fatalf("OnClose %d", ev.code)
	}
	if n := len(h.rec.closesOf(s.ID())); n != 1 {
		t.Fatalf("OnClose ran %d times", n)
	}
	eventually(t, "the sse gauge to drop", func() bool {
		return scrape(t, reg)[`troupe_connections_active{transport="sse"}`] == 0
	})
}

// A stream that is not reopened within StreamResumeWindow ends its session
// with 1006, as a lost WebSocket does.
func TestSSEResumeWindowEnds(t *testing.T) {
	h := startServer(t, benchConfig(troupe.Settings{StreamResumeWindow: 100 * time.Millisecond}))
	registerBench(h.srv)
	c := h.openSSE(t, "late", nil)
	s := h.rec.session(t, "late")
	_ = c.body.Close()
	if ev := h.rec.waitClose(t, s); ev.code != troupe.CloseAbnormal {
		t.Fatalf("OnClose %d %q, want 1006", ev.code, ev.reason)
	}
	req := h.sseRequest(t, http.MethodGet, "sse="+c.token, "late", nil, http.Header{"Last-Event-ID": {"0"}})
	if code := h.sseDo(t, c.hc, req); code != http.StatusNotFound {
		t.Fatalf("resume after the window: %d, want 404", code)
	}
}

// A client that keeps its stream open and never reads it is dropped like a
// WebSocket client that never reads: when its queue overflows (1013, with
// OnError told ErrSlowConsumer) or its write times out (1006); the other
// members are not held back.
func TestSSESlowConsumer(t *testing.T) {
	h := startServer(t, benchConfig(troupe.Settings{WriteTimeout: robustWriteTimeout}), smallSendBuffers())
	registerBench(h.srv)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	const room = "sse-flood"
	join := string(mustEnvelope(t, "room.join", benchRoom{Room: room}, nil))

	// The victim opens its stream, joins, reads the answer, then stops
	// reading (its parser goroutine is blocked on a full channel).
	victim := h.openSSEBuffered(t, "sse-victim", &http.Client{Transport: tr}, 1)
	if code := victim.post(t, join, nil); code != http.StatusNoContent {
		t.Fatalf("join: %d", code)
	}
	victimS := h.rec.session(t, "sse-victim")
	eventually(t, "the victim in the room", func() bool { return len(h.srv.RoomsOf(victimS)) == 1 })

	flooder := h.dial(t, "sse-flooder")
	flooder.startReading()
	flooder.write(t, []byte(join))
	flooder.expect(t, "room.joined")
	pad := strings.Repeat("x", 1024)
	deadline := time.Now().Add(waitTimeout)
	n := 0
	for victimS.IsOpen() {
		if time.Now().After(deadline) {
			t.Fatalf("a stream that is never read still open after %d messages", n)
		}
		n++
		flooder.send(t, "room.publish", benchPublish{Room: room, Body: json.RawMessage(strconv.Quote(pad))})
		if n%32 == 0 {
			flooder.waitReceived(t, n) // the room is not held back by the victim
		}
	}
	ev := h.rec.waitClose(t, victimS)
	switch ev.code {
	case troupe.CloseTryAgainLater:
		slow := false
		for _, err := range h.rec.errorsOf(victimS) {
			slow = slow || errors.Is(err, troupe.ErrSlowConsumer)
		}
		if !slow {
			t.Errorf("closed 1013 without OnError(ErrSlowConsumer)")
		}
	case troupe.CloseAbnormal:
	default:
		t.Errorf("victim: OnClose %d %q, want 1013 or 1006", ev.code, ev.reason)
	}
	if code := victim.post(t, join, nil); code != http.StatusNotFound {
		t.Errorf("POST after the drop: %d, want 404", code)
	}
	t.Logf("victim dropped (OnClose %d %q) after %d messages", ev.code, ev.reason, n)
	checkFreshBenchClient(t, h, "sse-slow")
}

// The rate limit counts every envelope a POST carries, as it counts a
// WebSocket's messages: those over it are answered "rate_limited" and not
// handled, and the session goes on.
func TestSSERateLimit(t *testing.T) {
	// One message a second, a burst of 2 (benchConfig would turn the
	// limit off).
	h := startServer(t, troupe.Config{RoomProtocol: true, Settings: troupe.Settings{RateLimit: 1, RateBurst: 2}})
	registerBench(h.srv)
	c := h.openSSE(t, "sse-rate", nil)
	var b strings.Builder
	for i := range 4 {
		fmt.Fprintf(&b, `{"type":"bench.echo","payload":%d}`+"\n", i)
	}
	if code := c.post(t, b.String(), nil); code != http.StatusNoContent {
		t.Fatalf("POST: %d", code)
	}
	echoes, limited := 0, 0
	for echoes+limited < 4 {
		e := decodeEnvelope(t, []byte(c.next(t).data))
		switch e.Type {
		case "bench.echo":
			echoes++
		case "error":
			if p := decodePayload[errorPayload](t, e); p.Code == "rate_limited" {
				limited++
			} else {
				t.Fatalf("error %+v", p)
			}
		}
	}
	if echoes != 2 || limited != 2 {
		t.Fatalf("%d echoes and %d rate_limited of 4 at once, want 2 and 2 (the burst)", echoes, limited)
	}
	if s := h.rec.session(t, "sse-rate"); !s.IsOpen() {
		t.Fatal("session closed by two refusals")
	}
}
