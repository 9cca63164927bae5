package tests

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/typed"
)

// The bench protocol as examples/benchserver serves it: Troupe's built-in
// room protocol (room.join, room.publish, room.leave) plus a bench.echo
// handler, with no rate limit (a load generator floods on purpose). The
// robustness battery and the soak test drive a server built the same way.

type benchRoom struct {
	Room string `json:"room"`
}

type benchPublish struct {
	Room string          `json:"room"`
	Body json.RawMessage `json:"body"`
}

// benchMessage is the payload of a room.message.
type benchMessage struct {
	Room string          `json:"room"`
	Seq  uint64          `json:"seq"`
	From string          `json:"from"`
	Body json.RawMessage `json:"body"`
}

// benchConfig is examples/benchserver's configuration, with settings on top.
func benchConfig(settings troupe.Settings) troupe.Config {
	settings.RateLimit = -1
	return troupe.Config{Settings: settings, RoomProtocol: true}
}

// registerBench installs what the built-in room protocol does not cover.
func registerBench(srv *troupe.Server) {
	troupe.Handle(srv, "bench.echo", func(c *troupe.Context, _ json.RawMessage) error {
		return c.Reply("bench.echo", c.Payload())
	})
}

// robustWriteTimeout bounds how long the writer of a client that stopped
// reading stays stuck on its full socket before the connection is cut.
// Under the default overflow policy (resync) that cut is what drops the
// slow consumer, so it must come well within the flood of 20,000 messages,
// which a build without the race detector publishes in about a second.
const robustWriteTimeout = 500 * time.Millisecond

// TestRobustBattery runs the cases of wsload's robust battery against one
// server speaking the bench protocol, each on a fresh connection. For each
// it checks what the server answered (an error envelope with the right
// code, or the right close code) and, where the connection should survive,
// that it still answers bench.echo; after every case a new client must
// still be served (echo, join, publish to itself, leave), and no panic may
// have reached OnError. One case goes beyond wsload's battery: text that is
// not UTF-8.
func TestRobustBattery(t *testing.T) {
	h := startServer(t, benchConfig(troupe.Settings{WriteTimeout: robustWriteTimeout}), smallSendBuffers())
	registerBench(h.srv)
	const maxSize = 65536 // the default Settings.MaxMessageSize

	errorCases := []struct {
		name   string
		binary bool
		frame  string
		code   string
	}{
		{"invalid-json", false, `{"type":"bench.echo","payload":`, typed.CodeBadRequest},
		{"not-an-object", false, `[1,2,3]`, typed.CodeBadRequest},
		{"unknown-type", false, `{"type":"no.such.type","payload":{}}`, typed.CodeUnknownType},
		{"missing-payload", false, `{"type":"room.join"}`, typed.CodeInvalidPayload},
		{"wrong-field-types", false, `{"type":"room.publish","payload":{"room":5,"body":[]}}`, typed.CodeInvalidPayload},
		{"binary-frame", true, `{"type":"bench.echo","payload":"bin"}`, "unsupported"},
	}
	for _, tc := range errorCases {
		t.Run(tc.name, func(t *testing.T) {
			c := h.dial(t, tc.name)
			c.startReading()
			typ := websocket.MessageText
			if tc.binary {
				typ = websocket.MessageBinary
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := c.ws.Write(ctx, typ, []byte(tc.frame)); err != nil {
				t.Fatalf("write: %v", err)
			}
			e := c.expect(t, "error")
			if p := decodePayload[errorPayload](t, e); p.Code != tc.code || p.Message == "" {
				t.Errorf("error %+v, want code %q with a message", p, tc.code)
			}
			expectEcho(t, c, "still-there")
			if s := h.rec.session(t, tc.name); !s.IsOpen() {
				t.Errorf("session closed after a bad input, want it open")
			}
			checkFreshBenchClient(t, h, tc.name)
		})
	}

	// Beyond wsload's battery: text that is not UTF-8. RFC 6455 (section
	// 8.1) says it fails the connection (1007). Handled instead, its bytes
	// reach other members inside a raw JSON body, and a browser fails a
	// connection that receives a text frame that is not UTF-8: one client
	// could disconnect every browser in the room.
	t.Run("invalid-utf8-text", func(t *testing.T) {
		const room = "robust-utf8"
		bystander, sender := h.dial(t, "utf8-bystander"), h.dial(t, "utf8-sender")
		for _, c := range []*client{bystander, sender} {
			c.startReading()
			c.write(t, mustEnvelope(t, "room.join", benchRoom{Room: room}, nil))
			c.expect(t, "room.joined")
		}
		senderS := h.rec.session(t, "utf8-sender")
		bad := []byte("{\"type\":\"room.publish\",\"payload\":{\"room\":\"" + room + "\",\"body\":\"\xff\xfe\"}}")
		if utf8.Valid(bad) {
			t.Fatal("the test frame is valid UTF-8")
		}
		// A failed connection is not processed any further (RFC 6455,
		// section 7.1.7): the publish after the bad frame must reach no
		// one, and the echo must not be answered (an answer tells a
		// server that went on serving the connection).
		after := mustEnvelope(t, "room.publish", benchPublish{Room: room, Body: json.RawMessage(`"after"`)}, nil)
		for _, f := range [][]byte{bad, after, []byte(`{"type":"bench.echo","payload":"after"}`)} {
			if err := sender.writeErr(f); err != nil {
				t.Logf("write: %v", err)
			}
		}
		if echoed, err := untilEchoOrEnd(t, sender); echoed {
			t.Errorf("the server went on serving a client that sent text that is not UTF-8, want close 1007")
		} else if code, reason := closeCode(err); code != websocket.StatusInvalidFramePayloadData {
			t.Errorf("client saw close %d (%s), want %d", code, reason, websocket.StatusInvalidFramePayloadData)
		}

		// The bystander's own message comes after anything the room had
		// from the sender: nothing before it may be invalid, or come from
		// the sender at all.
		h.rec.waitClose(t, senderS)
		bystander.write(t, mustEnvelope(t, "room.publish", benchPublish{Room: room, Body: json.RawMessage(`"flush"`)}, nil))
		for {
			f := bystander.next(t)
			if !utf8.Valid(f) {
				t.Fatalf("bystander got a text frame that is not UTF-8: %q", f)
			}
			e := decodeEnvelope(t, f)
			if e.Type != "room.message" {
				continue // presence
			}
			if m := decodePayload[benchMessage](t, e); string(m.Body) == `"flush"` {
				break
			} else if m.From == senderS.ID() {
				t.Errorf("bystander got the sender's message %s", f)
			}
		}
		expectEcho(t, bystander, "still-there")
		checkFreshBenchClient(t, h, "invalid-utf8")
	})

	t.Run("oversized-frame", func(t *testing.T) {
		c := h.dial(t, "oversized")
		c.startReading()
		head, tail := `{"type":"bench.echo","payload":"`, `"}`
		frame := head + strings.Repeat("x", maxSize+1-len(head)-len(tail)) + tail
		if len(frame) != maxSize+1 {
			t.Fatalf("frame of %d bytes, want %d", len(frame), maxSize+1)
		}
		if err := c.writeErr([]byte(frame)); err != nil {
			// The server may cut in before the client is done writing;
			// what it sent is checked below.
			t.Logf("write: %v", err)
		}
		rest, err := c.waitEnd(t)
		if len(rest) != 0 {
			t.Errorf("got %d messages before the close, want none: %.100q", len(rest), rest[0])
		}
		if code, reason := closeCode(err); code != troupe.CloseMessageTooBig {
			t.Errorf("client saw close %d (%s), want %d", code, reason, troupe.CloseMessageTooBig)
		}
		if ev := h.rec.waitClose(t, h.rec.session(t, "oversized")); ev.code != troupe.CloseMessageTooBig {
			t.Errorf("OnClose code %d (%q), want %d", ev.code, ev.reason, troupe.CloseMessageTooBig)
		}
		checkFreshBenchClient(t, h, "oversized")
	})

	t.Run("abrupt-close-mid-frame", func(t *testing.T) {
		nc := rawHandshake(t, h, "abrupt")
		// A masked text frame announced as 4096 bytes, of which only 100
		// are sent before the connection is reset.
		hdr := []byte{0x81, 0x80 | 126, 0, 0}
		binary.BigEndian.PutUint16(hdr[2:], 4096)
		var mask [4]byte
		_, _ = rand.Read(mask[:])
		part := []byte(`{"type":"bench.echo","payload":"` + strings.Repeat("y", 67))
		for i := range part {
			part[i] ^= mask[i%4]
		}
		_ = nc.SetWriteDeadline(time.Now().Add(waitTimeout))
		if _, err := nc.Write(append(append(hdr, mask[:]...), part...)); err != nil {
			t.Fatalf("write half frame: %v", err)
		}
		if err := nc.(*net.TCPConn).SetLinger(0); err != nil {
			t.Fatalf("SetLinger: %v", err)
		}
		_ = nc.Close() // with linger 0: a TCP reset
		if ev := h.rec.waitClose(t, h.rec.session(t, "abrupt")); ev.code != troupe.CloseAbnormal {
			t.Errorf("OnClose code %d (%q), want %d for a connection reset", ev.code, ev.reason, troupe.CloseAbnormal)
		}
		checkFreshBenchClient(t, h, "abrupt")
	})

	t.Run("slow-consumer", func(t *testing.T) {
		robustSlowConsumer(t, h)
		checkFreshBenchClient(t, h, "slow")
	})

	for _, e := range h.rec.errorsOf(nil) {
		t.Errorf("server-level OnError: %v", e)
	}
	h.rec.mu.Lock()
	defer h.rec.mu.Unlock()
	for _, e := range h.rec.errs {
		var pe *typed.PanicError
		if errors.As(e.err, &pe) || strings.Contains(e.err.Error(), "panic") {
			t.Errorf("OnError received a panic for %s: %v", e.s.Header().Get(clientHeader), e.err)
		}
	}
}

// robustSlowConsumer: a member with a small receive buffer never reads while
// a flooder publishes to its room with a window of 32 on what the room has
// delivered. The member must be dropped (1013, or 1006 once a write to it
// times out), the flooder must never wait on it, and the other members must
// get every message, in order.
func robustSlowConsumer(t *testing.T, h *testServer) {
	const (
		room      = "robust-flood"
		window    = 32
		bodySize  = 1024
		maxFlood  = 20000
		afterDrop = 64 // published after the drop, to the members left
		// floodTime bounds the flood if the victim is never dropped.
		floodTime = waitTimeout
		// stallWait bounds each wait for the readers: a room that waited on
		// its slow member would stall there.
		stallWait = waitTimeout
	)
	// The victim's kernel receive buffer is 4 KiB, as in wsload.
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
		return c, err
	}}
	t.Cleanup(tr.CloseIdleConnections)
	opts := h.dialOptions("victim")
	opts.HTTPClient = &http.Client{Transport: tr}
	victim := h.dialWith(t, "victim", opts)
	join := mustEnvelope(t, "room.join", benchRoom{Room: room}, nil)
	victim.write(t, join)
	// The one read the victim does before it stalls: its join reply.
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	_, reply, err := victim.ws.Read(ctx)
	cancel()
	if err != nil || decodeEnvelope(t, reply).Type != "room.joined" {
		t.Fatalf("victim join: %q, %v", reply, err)
	}
	victimS := h.rec.session(t, "victim")

	observer, flooder := h.dial(t, "observer"), h.dial(t, "flooder")
	for _, c := range []*client{observer, flooder} {
		c.startReading()
		c.write(t, join)
		c.expect(t, "room.joined")
	}
	readers := []*roomReader{newRoomReader(observer), newRoomReader(flooder)}

	pad := strings.Repeat("x", bodySize)
	published, stopAt := 0, maxFlood
	floodEnd := time.Now().Add(floodTime)
	for published < stopAt {
		if stopAt == maxFlood && !victimS.IsOpen() {
			stopAt = published + afterDrop
		}
		if stopAt == maxFlood && time.Now().After(floodEnd) {
			break
		}
		if published >= window {
			// Wait until both readers have the message published window
			// ago: the room must never wait on the slow member.
			for _, r := range readers {
				r.wait(t, published-window+1, stallWait)
			}
		}
		published++
		body := fmt.Sprintf("%d:", published) + pad
		flooder.send(t, "room.publish", benchPublish{Room: room, Body: json.RawMessage(strconv.Quote(body))})
	}
	if stopAt == maxFlood {
		t.Fatalf("a member that never reads still open after %d messages of %d bytes", published, bodySize)
	}
	for _, r := range readers {
		r.wait(t, published, stallWait)
		for i, m := range r.messages(t) {
			if got := benchSeq(t, m, room); got != i+1 || m.Seq != uint64(i+1) {
				t.Fatalf("%s: message %d has body %d and seq %d: lost or out of order", r.c.name, i+1, got, m.Seq)
			}
		}
		if s := h.rec.session(t, r.c.name); !s.IsOpen() {
			t.Errorf("%s: session closed, want open", r.c.name)
		}
	}

	// The victim is dropped either when its outbound queue overflows (1013,
	// and OnError is told ErrSlowConsumer) or, if its writer stays stuck on
	// the full socket for WriteTimeout first, when that write fails (1006).
	ev := h.rec.waitClose(t, victimS)
	switch ev.code {
	case troupe.CloseTryAgainLater:
		slow := false
		for _, err := range h.rec.errorsOf(victimS) {
			slow = slow || errors.Is(err, troupe.ErrSlowConsumer)
		}
		if !slow {
			t.Errorf("victim: closed with %d without OnError(ErrSlowConsumer): %v", ev.code, h.rec.errorsOf(victimS))
		}
	case troupe.CloseAbnormal:
	default:
		t.Errorf("victim: OnClose code %d (%q), want %d or %d", ev.code, ev.reason, troupe.CloseTryAgainLater, troupe.CloseAbnormal)
	}
	// What reached the victim is the start of the feed, without a gap, then
	// the end of the connection: 1013 or 1008 if a close frame got through,
	// else TCP closed (1006).
	victim.startReading()
	rest, err := victim.waitEnd(t)
	got := 0
	for _, f := range rest {
		e := decodeEnvelope(t, f)
		if e.Type == "presence.diff" {
			continue
		}
		if e.Type != "room.message" {
			t.Fatalf("victim: got %q, want room messages", e.Type)
		}
		got++
		if seq := benchSeq(t, decodePayload[benchMessage](t, e), room); seq != got {
			t.Fatalf("victim: message %d has seq %d: a gap before the close", got, seq)
		}
	}
	code, reason := closeCode(err)
	switch code {
	case troupe.CloseTryAgainLater, troupe.ClosePolicyViolation, -1:
	default:
		t.Errorf("victim: close %d (%s), want %d, %d or no close frame", code, reason, troupe.CloseTryAgainLater, troupe.ClosePolicyViolation)
	}
	t.Logf("victim dropped (OnClose %d %q); published %d, victim got %d then %s", ev.code, ev.reason, published, got, reason)
}

// untilEchoOrEnd reads c's messages until a bench.echo (echoed) or the end
// of the connection (with the error that ended it).
func untilEchoOrEnd(t *testing.T, c *client) (echoed bool, end error) {
	t.Helper()
	deadline := time.NewTimer(waitTimeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		frames := c.frames[c.taken:]
		c.taken = len(c.frames)
		end, changed := c.readErr, c.changed
		c.mu.Unlock()
		for _, f := range frames {
			if decodeEnvelope(t, f).Type == "bench.echo" {
				return true, nil
			}
		}
		if end != nil {
			return false, end
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("%s: neither an answer nor a close within %v", c.name, waitTimeout)
		}
	}
}

// roomReader follows the room messages a reading client received, skipping
// presence diffs.
type roomReader struct {
	c       *client
	scanned int
	msgs    []benchMessage
}

// newRoomReader follows what c receives after the messages already taken.
func newRoomReader(c *client) *roomReader {
	c.mu.Lock()
	defer c.mu.Unlock()
	return &roomReader{c: c, scanned: c.taken}
}

// scan decodes the frames that arrived since the last scan.
func (r *roomReader) scan(t *testing.T) (n int, changed <-chan struct{}, end error) {
	t.Helper()
	r.c.mu.Lock()
	frames := r.c.frames[r.scanned:]
	r.scanned = len(r.c.frames)
	end, changed = r.c.readErr, r.c.changed
	r.c.mu.Unlock()
	for _, f := range frames {
		switch e := decodeEnvelope(t, f); e.Type {
		case "room.message":
			r.msgs = append(r.msgs, decodePayload[benchMessage](t, e))
		case "presence.diff":
		default:
			t.Fatalf("%s: got %q during the flood: %s", r.c.name, e.Type, e.Payload)
		}
	}
	return len(r.msgs), changed, end
}

// wait waits until n room messages arrived, for at most limit: a room that
// waited on its slow member would stall here.
func (r *roomReader) wait(t *testing.T, n int, limit time.Duration) {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		got, changed, end := r.scan(t)
		if got >= n {
			return
		}
		if end != nil {
			t.Fatalf("%s: connection ended after %d of %d messages: %v", r.c.name, got, n, end)
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("publisher stalled: %s got %d of %d messages within %v", r.c.name, got, n, limit)
		}
	}
}

func (r *roomReader) messages(t *testing.T) []benchMessage {
	t.Helper()
	r.scan(t)
	return r.msgs
}

// benchSeq returns the sequence number at the start of a room message's
// body, checking the room.
func benchSeq(t *testing.T, m benchMessage, room string) int {
	t.Helper()
	var body string
	if err := json.Unmarshal(m.Body, &body); err != nil || m.Room != room {
		t.Fatalf("room.message %+v: want room %q and a string body", m, room)
	}
	seq, _, _ := strings.Cut(body, ":")
	n, err := strconv.Atoi(seq)
	if err != nil {
		t.Fatalf("room.message body %.40q has no sequence number", body)
	}
	return n
}

// expectEcho checks that c still answers bench.echo.
func expectEcho(t *testing.T, c *client, text string) {
	t.Helper()
	c.write(t, []byte(`{"type":"bench.echo","payload":`+strconv.Quote(text)+`}`))
	if e := c.expect(t, "bench.echo"); string(e.Payload) != strconv.Quote(text) {
		t.Errorf("%s: echo payload %s, want %q", c.name, e.Payload, text)
	}
}

// checkFreshBenchClient checks that a new client is served: echo, join a
// room, publish to it and get its own message, leave.
func checkFreshBenchClient(t *testing.T, h *testServer, after string) {
	t.Helper()
	name := "fresh-after-" + after
	c := h.dial(t, name)
	c.startReading()
	expectEcho(t, c, "fresh")
	s := h.rec.session(t, name)
	room := "robust-check-" + after
	c.write(t, mustEnvelope(t, "room.join", benchRoom{Room: room}, nil))
	if p := decodePayload[benchRoom](t, c.expect(t, "room.joined")); p.Room != room {
		t.Errorf("%s: joined %q, want %q", name, p.Room, room)
	}
	c.write(t, mustEnvelope(t, "room.publish", benchPublish{Room: room, Body: json.RawMessage(`"fresh"`)}, nil))
	m := decodePayload[benchMessage](t, c.expect(t, "room.message"))
	if m.Room != room || string(m.Body) != `"fresh"` || m.From != s.ID() {
		t.Errorf("%s: room.message %+v, want its own \"fresh\" in %q", name, m, room)
	}
	c.write(t, mustEnvelope(t, "room.leave", benchRoom{Room: room}, nil))
	if p := decodePayload[benchRoom](t, c.expect(t, "room.left")); p.Room != room {
		t.Errorf("%s: left %q, want %q", name, p.Room, room)
	}
	if rooms := h.srv.RoomsOf(s); len(rooms) != 0 {
		t.Errorf("%s: still in %v after room.left", name, rooms)
	}
	if err := c.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Errorf("%s: close: %v", name, err)
	}
	h.rec.waitClose(t, s)
}

// rawHandshake opens a TCP connection to the server and performs the
// WebSocket opening handshake by hand, so the test can then write bytes no
// WebSocket library would.
func rawHandshake(t *testing.T, h *testServer, name string) net.Conn {
	t.Helper()
	nc, err := net.DialTimeout("tcp", h.ts.Listener.Addr().String(), waitTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() { _ = nc.Close() })
	var key [16]byte
	_, _ = rand.Read(key[:])
	k := base64.StdEncoding.EncodeToString(key[:])
	req, err := http.NewRequest(http.MethodGet, h.ts.URL, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Upgrade", "websocket")
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Sec-WebSocket-Key", k)
	req.Header.Set("Sec-WebSocket-Version", "13")
	req.Header.Set(clientHeader, name)
	_ = nc.SetDeadline(time.Now().Add(waitTimeout))
	if err := req.Write(nc); err != nil {
		t.Fatalf("write handshake: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), req)
	if err != nil {
		t.Fatalf("read handshake: %v", err)
	}
	_ = resp.Body.Close()
	sum := sha1.Sum([]byte(k + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	if resp.StatusCode != http.StatusSwitchingProtocols ||
		resp.Header.Get("Sec-WebSocket-Accept") != base64.StdEncoding.EncodeToString(sum[:]) {
		t.Fatalf("handshake answered %s (accept %q)", resp.Status, resp.Header.Get("Sec-WebSocket-Accept"))
	}
	_ = nc.SetDeadline(time.Time{})
	return nc
}
