package tests

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe"
)

// Reproductions of library bugs the fault-injection suite found, each made
// deterministic, so that they stay fixed.

// TestFaultBugOnCloseWithoutOnOpen: a connection whose upgrade is under way
// when Shutdown begins gets OnClose though OnOpen never ran for it. The
// README promises OnClose "exactly once per session that opened, never for
// one that did not". In internal/serve's ServeHTTP, register refuses the
// session once Shutdown has begun, and the session is then ended with
// session.Finish, which runs OnClose.
//
// Authorize holds the handshake between the connection's admission and its
// registration, which makes the window as wide as the test needs.
func TestFaultBugOnCloseWithoutOnOpen(t *testing.T) {
	inAuth, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := startServer(t, troupe.Config{
		Authorize: func(*http.Request) (string, error) {
			once.Do(func() { close(inAuth) })
			<-release
			return "", nil
		},
	})
	dialed := make(chan error, 1)
	go func() {
		ws, _, err := h.tryDial(h.dialOptions("late"))
		if err == nil {
			_ = ws.CloseNow()
		}
		dialed <- err
	}()
	<-inAuth
	shutdown := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
		defer cancel()
		shutdown <- h.srv.Shutdown(ctx)
	}()
	// Shutdown has begun once a plain request is refused with 503.
	eventually(t, "Shutdown to begin", func() bool {
		resp, err := h.ts.Client().Get(h.ts.URL)
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusServiceUnavailable
	})
	close(release)
	<-dialed
	if err := <-shutdown; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	time.Sleep(50 * time.Millisecond) // any late hook would have run by now
	opens, closes := h.rec.counts()
	if closes > opens {
		h.rec.mu.Lock()
		defer h.rec.mu.Unlock()
		for _, c := range h.rec.closes {
			t.Errorf("OnClose(%s, %d, %q) for a session whose OnOpen never ran (%d opens, %d closes)",
				c.s.Header().Get(clientHeader), c.code, c.reason, opens, closes)
		}
	}
}

// TestFaultBugDropWaitsForCloseHandshake: a session whose close handshake
// is under way cannot be dropped. The client here never reads, so it never
// answers the close frame; coder/websocket's Close then waits 5 seconds for
// the answer. Meanwhile:
//
//   - Shutdown(ctx) is documented to drop the sessions left when ctx ends
//     and to return ctx's error at once, but returns only when that 5
//     second wait is over (and OnClose comes no sooner);
//   - Server.Close is documented to drop every connection at once, but
//     waits the same 5 seconds for a session that Session.Close began to
//     close.
//
// Cause: session.Drop calls wsConn.CloseNow (internal/serve/wsconn.go),
// which is coder/websocket's CloseNow; while a Close is in progress that
// only waits for it. Closing the raw net.Conn first would cut it.
func TestFaultBugDropWaitsForCloseHandshake(t *testing.T) {
	// Far below the 5 seconds coder/websocket waits for the handshake.
	const bound = 2 * time.Second

	t.Run("Shutdown", func(t *testing.T) {
		h := startServer(t, troupe.Config{})
		h.dial(t, "mute") // never reads
		s := h.rec.session(t, "mute")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		t0 := time.Now()
		err := h.srv.Shutdown(ctx)
		if took := time.Since(t0); took > bound {
			t.Errorf("Shutdown with a 300ms ctx returned %v after %v; want ctx's error at once", err, took.Round(time.Millisecond))
		}
		h.rec.waitClose(t, s)
		if took := time.Since(t0); took > bound {
			t.Errorf("OnClose of the dropped session came %v after Shutdown began", took.Round(time.Millisecond))
		}
	})

	t.Run("Close", func(t *testing.T) {
		h := startServer(t, troupe.Config{})
		h.dial(t, "mute") // never reads
		s := h.rec.session(t, "mute")
		_ = s.Close("bye") // its close handshake begins, and is never answered
		time.Sleep(100 * time.Millisecond)
		t0 := time.Now()
		_ = h.srv.Close()
		if took := time.Since(t0); took > bound {
			t.Errorf("Server.Close returned after %v; want every connection dropped at once", took.Round(time.Millisecond))
		}
	})
}
