package tests

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/google/uuid"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/internal/session"
)

// TestOnCloseRunsOncePerSessionUnderConcurrentCloses checks that however
// many parties end a session at once (the server closing it, dropping it,
// the peer closing, the whole server closing), OnClose runs exactly once for
// it.
func TestOnCloseRunsOncePerSessionUnderConcurrentCloses(t *testing.T) {
	const n = 24
	h := startServer(t, troupe.Config{})
	clients := make(map[string]*client, n)
	for i := range n {
		name := fmt.Sprintf("c%d", i)
		clients[name] = h.dial(t, name)
		clients[name].startReading()
	}
	h.rec.waitFor(t, "every session to open", func() bool { return len(h.rec.opens) == n })

	h.rec.mu.Lock()
	sessions := append([]*troupe.Session(nil), h.rec.opens...)
	h.rec.mu.Unlock()

	start := make(chan struct{})
	var wg sync.WaitGroup
	race := func(fn func()) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			fn()
		}()
	}
	for _, s := range sessions {
		c := clients[s.Header().Get(clientHeader)]
		race(func() { _ = s.Close("server close") })
		race(func() { session.Drop(s, "shutdown") })
		race(func() { _ = c.ws.Close(websocket.StatusNormalClosure, "peer close") })
	}
	race(func() { _ = h.srv.Close() })
	close(start)
	wg.Wait()

	// Close returns once every connection is gone but those running a
	// callback, OnClose among them: it may have returned while some
	// OnClose was still running.
	h.rec.waitFor(t, "every OnClose", func() bool { return len(h.rec.closes) >= n })
	perID := map[string]int{}
	h.rec.mu.Lock()
	for _, c := range h.rec.closes {
		perID[c.s.ID()]++
	}
	h.rec.mu.Unlock()
	for _, s := range sessions {
		if got := perID[s.ID()]; got != 1 {
			t.Errorf("session %s: OnClose ran %d times, want 1", s.Header().Get(clientHeader), got)
		}
		delete(perID, s.ID())
		if s.IsOpen() {
			t.Errorf("session %s still open", s.Header().Get(clientHeader))
		}
	}
	for id, got := range perID {
		t.Errorf("OnClose ran %d times for %s, which never opened", got, id)
	}
	if left := h.srv.Sessions(); len(left) != 0 {
		t.Errorf("Sessions() after Close: %d left", len(left))
	}
}

// TestRefusedConnectionNeverOpens checks that a connection refused by
// Authorize gets its HTTP status and never becomes a session: no OnOpen, no
// OnClose.
func TestRefusedConnectionNeverOpens(t *testing.T) {
	h := startServer(t, troupe.Config{
		Authorize: func(r *http.Request) (string, error) {
			switch r.Header.Get("X-Token") {
			case "good":
				return "user-7", nil
			case "banned":
				return "", fmt.Errorf("user is banned: %w", troupe.ErrForbidden)
			}
			return "", errors.New("missing token")
		},
	})

	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {"banned", http.StatusForbidden}} {
		opts := h.dialOptions("refused-" + tc.token)
		opts.HTTPHeader.Set("X-Token", tc.token)
		h.expectRefused(t, fmt.Sprintf("token %q", tc.token), opts, tc.want)
	}

	opts := h.dialOptions("accepted")
	opts.HTTPHeader.Set("X-Token", "good")
	c := h.dialWith(t, "accepted", opts)
	c.startReading()
	s := h.rec.session(t, "accepted")
	if got := s.Identity(); got != "user-7" {
		t.Errorf("Identity() = %q, want the one Authorize returned", got)
	}
	if err := c.ws.Close(websocket.StatusNormalClosure, "done"); err != nil {
		t.Fatalf("client close: %v", err)
	}
	h.rec.waitClose(t, s)

	opens, closes := h.rec.counts()
	if opens != 1 || closes != 1 {
		t.Errorf("OnOpen ran %d times and OnClose %d times, want once each (for the accepted client only)", opens, closes)
	}
}

type blobMsg struct {
	Data string `json:"data"`
}

// TestMessageOverLimitClosesWith1009 checks that a message of exactly
// MaxMessageSize bytes is accepted, and that one byte more (or much more)
// gets the client close 1009, and OnClose reports 1009.
func TestMessageOverLimitClosesWith1009(t *testing.T) {
	const limit = 1024
	h := startServer(t, troupe.Config{Settings: troupe.Settings{MaxMessageSize: limit}})
	troupe.Handle(h.srv, "blob", func(c *troupe.Context, m blobMsg) error {
		return c.Reply("blob.ok", len(m.Data))
	})
	// blob returns an envelope of exactly size bytes.
	blob := func(size int) []byte {
		prefix, suffix := `{"type":"blob","payload":{"data":"`, `"}}`
		return []byte(prefix + strings.Repeat("x", size-len(prefix)-len(suffix)) + suffix)
	}

	for _, over := range []int{1, 3 * limit, 1024 * limit} {
		t.Run(fmt.Sprintf("limit+%d", over), func(t *testing.T) {
			name := fmt.Sprintf("over-%d", over)
			c := h.dial(t, name)
			c.startReading()
			s := h.rec.session(t, name)

			c.write(t, blob(limit))
			if got := decodePayload[int](t, c.expect(t, "blob.ok")); got != limit-len(`{"type":"blob","payload":{"data":""}}`) {
				t.Errorf("handler saw %d bytes of data", got)
			}

			// The server stops reading at the limit, so a write larger
			// than the socket buffers can fail with the connection reset
			// under it; what the client must still get is the close frame.
			if err := c.writeErr(blob(limit + over)); err != nil && over < limit {
				t.Fatalf("write: %v", err)
			}
			rest, err := c.waitEnd(t)
			if len(rest) != 0 {
				t.Errorf("got %d messages after the oversized one", len(rest))
			}
			if code, reason := closeCode(err); code != websocket.StatusMessageTooBig {
				t.Errorf("client close status %d (%s), want %d", code, reason, websocket.StatusMessageTooBig)
			}
			if ev := h.rec.waitClose(t, s); ev.code != troupe.CloseMessageTooBig {
				t.Errorf("OnClose code %d (%q), want %d", ev.code, ev.reason, troupe.CloseMessageTooBig)
			}
		})
	}
}

type tickMsg struct {
	N int `json:"n"`
}

// TestIdleClientIsClosedWith1008 checks that a client that sends nothing for
// IdleTimeout is closed with 1008 "idle timeout", even though it answers
// pings, while one that keeps sending stays.
func TestIdleClientIsClosedWith1008(t *testing.T) {
	const idle = 300 * time.Millisecond
	h := startServer(t, troupe.Config{Settings: troupe.Settings{
		IdleTimeout:  idle,
		PingInterval: 100 * time.Millisecond,
		PongTimeout:  waitTimeout,
	}})
	troupe.Handle(h.srv, "tick", func(c *troupe.Context, m tickMsg) error {
		return c.Reply("tock", m.N)
	})

	var quietPings atomic.Int32
	opts := h.dialOptions("quiet")
	opts.OnPingReceived = func(context.Context, []byte) bool { quietPings.Add(1); return true }
	quiet := h.dialWith(t, "quiet", opts)
	quiet.startReading() // answers pings, sends nothing
	busy := h.dial(t, "busy")
	busy.startReading()
	quietS, busyS := h.rec.session(t, "quiet"), h.rec.session(t, "busy")

	// The busy client sends a tick every sixth of the idle timeout, and
	// waits for its answer, until three idle periods after the quiet one
	// was closed.
	ticker := time.NewTicker(idle / 6)
	defer ticker.Stop()
	var end <-chan time.Time
	quietEnded := quiet.done
	giveUp := afterTimeout()
	n, afterClose := 0, 0
loop:
	for {
		select {
		case <-ticker.C:
			busy.send(t, "tick", tickMsg{N: n})
			if got := decodePayload[int](t, busy.expect(t, "tock")); got != n {
				t.Fatalf("tock %d, want %d", got, n)
			}
			n++
			if end != nil {
				afterClose++
			}
		case <-quietEnded:
			quietEnded = nil
			end = time.After(3 * idle)
		case <-end:
			break loop
		case <-giveUp:
			t.Fatal("quiet client was not closed")
		}
	}

	rest, err := quiet.waitEnd(t)
	if len(rest) != 0 {
		t.Errorf("quiet client got %d messages", len(rest))
	}
	if code, reason := closeCode(err); code != websocket.StatusPolicyViolation || reason != "idle timeout" {
		t.Errorf("quiet client: close %d %q, want %d \"idle timeout\"", code, reason, websocket.StatusPolicyViolation)
	}
	if ev := h.rec.waitClose(t, quietS); ev.code != troupe.ClosePolicyViolation || ev.reason != "idle timeout" {
		t.Errorf("quiet OnClose: %d %q, want %d \"idle timeout\"", ev.code, ev.reason, troupe.ClosePolicyViolation)
	}
	if !busyS.IsOpen() || len(h.rec.closesOf(busyS.ID())) != 0 {
		t.Errorf("busy client was closed after %d ticks (%d after the quiet one closed)", n, afterClose)
	}
	if quietPings.Load() == 0 {
		t.Error("the quiet client was never pinged: the test did not show that pongs do not count as activity")
	}
}

// TestUnansweredPingDropsConnection checks that a client that does not
// answer pings is dropped after PongTimeout, with OnClose 1006 "pong
// timeout", while a client that answers stays.
func TestUnansweredPingDropsConnection(t *testing.T) {
	h := startServer(t, troupe.Config{Settings: troupe.Settings{
		PingInterval: 200 * time.Millisecond,
		PongTimeout:  200 * time.Millisecond,
		IdleTimeout:  -1,
	}})

	pings := make(chan struct{}, 1024)
	opts := h.dialOptions("answering")
	opts.OnPingReceived = func(context.Context, []byte) bool {
		select {
		case pings <- struct{}{}:
		default:
		}
		return true
	}
	answering := h.dialWith(t, "answering", opts)
	answering.startReading() // coder/websocket answers pings while reading
	h.dial(t, "deaf")        // never reads, so never answers a ping
	answeringS, deafS := h.rec.session(t, "answering"), h.rec.session(t, "deaf")

	ev := h.rec.waitClose(t, deafS)
	if ev.code != troupe.CloseAbnormal || ev.reason != "pong timeout" {
		t.Errorf("deaf OnClose: %d %q, want %d \"pong timeout\"", ev.code, ev.reason, troupe.CloseAbnormal)
	}

	// The answering client lives through more pings after that.
	for range len(pings) {
		<-pings
	}
	for i := range 3 {
		select {
		case <-pings:
		case <-afterTimeout():
			t.Fatalf("answering client: ping %d after the drop never came", i+1)
		}
	}
	if !answeringS.IsOpen() || len(h.rec.closesOf(answeringS.ID())) != 0 {
		t.Error("answering client was closed")
	}
}

type queuedMsg struct {
	Seq int    `json:"seq"`
	Pad string `json:"pad"`
}

// TestGracefulShutdownDeliversQueuedMessages checks that Shutdown lets every
// client read what was queued for it before closing it with 1001, that
// upgrades during and after Shutdown get 503, and that Shutdown and Close may
// be called again.
func TestGracefulShutdownDeliversQueuedMessages(t *testing.T) {
	const clients, perClient, size = 4, 200, 8 << 10
	h := startServer(t, troupe.Config{Settings: troupe.Settings{MaxQueuedMessages: perClient}}, smallSendBuffers())

	cs := make([]*client, clients)
	ss := make([]*troupe.Session, clients)
	for i := range cs {
		name := fmt.Sprintf("c%d", i)
		cs[i] = h.dial(t, name) // not reading yet
		ss[i] = h.rec.session(t, name)
	}
	pad := strings.Repeat("q", size)
	for _, s := range ss {
		for i := range perClient {
			if err := s.Send("queued", queuedMsg{Seq: i, Pad: pad}); err != nil {
				t.Fatalf("Send %d: %v", i, err)
			}
		}
	}
	// The clients are not reading, so the messages are still in the
	// server's queues (not only in socket buffers) when Shutdown starts.
	for _, s := range ss {
		if session.QueueLen(s) == 0 {
			t.Fatalf("%s: nothing left in the queue before Shutdown", s.Header().Get(clientHeader))
		}
	}

	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		shutdown <- h.srv.Shutdown(ctx)
	}()
	eventually(t, "Shutdown to start closing sessions", func() bool {
		for _, s := range ss {
			if s.IsOpen() {
				return false
			}
		}
		return true
	})
	h.expectRefused(t, "dial during Shutdown", h.dialOptions("during"), http.StatusServiceUnavailable)

	for i, c := range cs {
		c.startReading()
		frames, err := c.waitEnd(t)
		if len(frames) != perClient {
			t.Errorf("%s: %d messages before the close, want %d", c.name, len(frames), perClient)
		}
		for seq, f := range frames {
			if m := decodePayload[queuedMsg](t, decodeEnvelope(t, f)); m.Seq != seq {
				t.Fatalf("%s: message %d has seq %d", c.name, seq, m.Seq)
			}
		}
		if code, reason := closeCode(err); code != websocket.StatusGoingAway {
			t.Errorf("%s: close %d (%s), want %d", c.name, code, reason, websocket.StatusGoingAway)
		}
		if ev := h.rec.waitClose(t, ss[i]); ev.code != troupe.CloseGoingAway {
			t.Errorf("%s: OnClose %d %q, want %d", c.name, ev.code, ev.reason, troupe.CloseGoingAway)
		}
	}
	select {
	case err := <-shutdown:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-afterTimeout():
		t.Fatal("Shutdown did not return after every client closed")
	}

	h.expectRefused(t, "dial after Shutdown", h.dialOptions("after"), http.StatusServiceUnavailable)
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	if err := h.srv.Shutdown(ctx); err != nil && !errors.Is(err, troupe.ErrServerClosed) {
		t.Errorf("second Shutdown: %v", err)
	}
	if err := h.srv.Close(); err != nil && !errors.Is(err, troupe.ErrServerClosed) {
		t.Errorf("Close after Shutdown: %v", err)
	}
	if opens, closes := h.rec.counts(); opens != clients || closes != clients {
		t.Errorf("OnOpen %d, OnClose %d; want %d each", opens, closes, clients)
	}
}

// TestStopFromHandler checks that a handler may stop the server it runs in.
// Shutdown waits for every session, the handler's own included, which ends
// only once the handler has returned: started on a goroutine of its own,
// it closes every client with 1001 and returns nil; called in the handler
// with a deadline, it returns the deadline's error when the deadline
// passes, with the other clients closed with 1001, and the handler's own
// session ends once the handler returns. Close from a handler drops every
// connection and returns without waiting for the handler's own session.
// None deadlocks on the handler it runs in.
func TestStopFromHandler(t *testing.T) {
	for _, mode := range []string{"shutdown", "shutdown with a deadline", "close"} {
		t.Run(mode, func(t *testing.T) {
			const deadline = 300 * time.Millisecond
			returned := make(chan error, 1)
			var took time.Duration
			h := startServer(t, troupe.Config{})
			troupe.Handle(h.srv, "stop", func(c *troupe.Context, _ struct{}) error {
				srv := c.Server()
				switch mode {
				case "shutdown":
					go func() {
						ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
						defer cancel()
						returned <- srv.Shutdown(ctx)
					}()
				case "shutdown with a deadline":
					ctx, cancel := context.WithTimeout(context.Background(), deadline)
					defer cancel()
					start := time.Now()
					err := srv.Shutdown(ctx)
					took = time.Since(start)
					returned <- err
				default:
					returned <- srv.Close()
				}
				return nil
			})
			const n = 3
			cs := make([]*client, n)
			for i := range cs {
				cs[i] = h.dial(t, fmt.Sprintf("c%d", i))
				cs[i].startReading()
				h.rec.session(t, cs[i].name)
			}

			cs[0].send(t, "stop", nil)
			select {
			case err := <-returned:
				if mode == "shutdown with a deadline" {
					if !errors.Is(err, context.DeadlineExceeded) {
						t.Errorf("%s: %v, want %v", mode, err, context.DeadlineExceeded)
					}
					if took < deadline || took > deadline+time.Second {
						t.Errorf("%s returned after %v, want it at the deadline (%v)", mode, took, deadline)
					}
				} else if err != nil {
					t.Errorf("%s from a handler: %v", mode, err)
				}
			case <-afterTimeout():
				t.Fatalf("%s from a handler did not return", mode)
			}

			for i, c := range cs {
				rest, err := c.waitEnd(t)
				if len(rest) != 0 {
					t.Errorf("%s: %d unexpected messages", c.name, len(rest))
				}
				code, reason := closeCode(err)
				ev := h.rec.waitClose(t, h.rec.session(t, c.name))
				switch {
				case mode == "close":
					if code != -1 {
						t.Errorf("%s: close frame %d %q, want the connection dropped", c.name, code, reason)
					}
					if ev.code != troupe.CloseAbnormal {
						t.Errorf("%s: OnClose %d %q, want %d", c.name, ev.code, ev.reason, troupe.CloseAbnormal)
					}
				case mode == "shutdown with a deadline" && i == 0:
					// Closing with 1001 when the deadline passed, then
					// dropped: the close frame may or may not have gone
					// out, and OnClose reports the drop.
					if code != websocket.StatusGoingAway && code != -1 {
						t.Errorf("%s: close %d (%s), want %d or none", c.name, code, reason, websocket.StatusGoingAway)
					}
					if ev.code != troupe.CloseAbnormal {
						t.Errorf("%s: OnClose %d %q, want %d", c.name, ev.code, ev.reason, troupe.CloseAbnormal)
					}
				default:
					if code != websocket.StatusGoingAway {
						t.Errorf("%s: close %d (%s), want %d", c.name, code, reason, websocket.StatusGoingAway)
					}
					if ev.code != troupe.CloseGoingAway {
						t.Errorf("%s: OnClose %d %q, want %d", c.name, ev.code, ev.reason, troupe.CloseGoingAway)
					}
				}
			}

			// Both stay callable (and quick) once the server is stopped.
			ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
			defer cancel()
			if err := h.srv.Shutdown(ctx); err != nil && !errors.Is(err, troupe.ErrServerClosed) {
				t.Errorf("Shutdown afterwards: %v", err)
			}
			if err := h.srv.Close(); err != nil && !errors.Is(err, troupe.ErrServerClosed) {
				t.Errorf("Close afterwards: %v", err)
			}
		})
	}
}

// TestSessionDescribesItsConnection checks that the session handed to OnOpen
// and OnClose describes the connection, and that once closed it refuses
// sends and its context is done.
func TestSessionDescribesItsConnection(t *testing.T) {
	type seen struct {
		ctxErr  error
		sendErr error
		open    bool
	}
	atClose := make(chan seen, 1)
	h := startServer(t, troupe.Config{
		OnClose: func(s *troupe.Session, _ int, _ string) {
			atClose <- seen{ctxErr: s.Context().Err(), sendErr: s.Send("late", 1), open: s.IsOpen()}
		},
	})
	opts := h.dialOptions("described")
	opts.HTTPHeader.Set("X-Custom", "custom-value")
	c := h.dialWith(t, "described", opts)
	c.startReading()
	s := h.rec.session(t, "described")

	if _, err := uuid.Parse(s.ID()); err != nil {
		t.Errorf("ID() = %q is not a UUID: %v", s.ID(), err)
	}
	if got := s.Header().Get("X-Custom"); got != "custom-value" {
		t.Errorf("Header().Get(X-Custom) = %q", got)
	}
	if got := s.Header().Get("User-Agent"); got == "" {
		t.Error("Header().Get(User-Agent) is empty, want the upgrade request's")
	}
	for _, k := range []string{"Upgrade", "Connection", "Sec-WebSocket-Key", "Sec-WebSocket-Version"} {
		if got := s.Header().Get(k); got != "" {
			t.Errorf("Header().Get(%s) = %q: the handshake's own fields are not kept", k, got)
		}
	}
	if got := s.RemoteAddr(); !strings.HasPrefix(got, "127.0.0.1:") {
		t.Errorf("RemoteAddr() = %q, want 127.0.0.1:port", got)
	}
	if !s.IsOpen() || s.Context().Err() != nil {
		t.Errorf("open session: IsOpen %v, Context().Err() %v", s.IsOpen(), s.Context().Err())
	}
	if h.srv.Session(s.ID()) != s {
		t.Error("Server.Session(ID) does not return the open session")
	}
	if err := s.Send("hello", "there"); err != nil {
		t.Fatalf("Send while open: %v", err)
	}
	if got := decodePayload[string](t, c.expect(t, "hello")); got != "there" {
		t.Errorf("hello payload %q", got)
	}

	if err := c.ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("client close: %v", err)
	}
	ev := h.rec.waitClose(t, s)
	if ev.code != troupe.CloseNormal || ev.reason != "bye" {
		t.Errorf("OnClose %d %q, want the peer's 1000 \"bye\"", ev.code, ev.reason)
	}
	got := <-atClose
	if got.ctxErr == nil || got.open || !errors.Is(got.sendErr, troupe.ErrClosed) {
		t.Errorf("inside OnClose: Context().Err() %v, IsOpen %v, Send %v; want done, false, ErrClosed", got.ctxErr, got.open, got.sendErr)
	}
	select {
	case <-s.Context().Done():
	default:
		t.Error("Context() not done after close")
	}
	if err := s.Send("after", 1); !errors.Is(err, troupe.ErrClosed) {
		t.Errorf("Send after close: %v, want ErrClosed", err)
	}
	if err := s.SendText([]byte(`{"type":"after"}`)); !errors.Is(err, troupe.ErrClosed) {
		t.Errorf("SendText after close: %v, want ErrClosed", err)
	}
	if h.srv.Session(s.ID()) != nil {
		t.Error("Server.Session(ID) still returns the closed session")
	}
}
