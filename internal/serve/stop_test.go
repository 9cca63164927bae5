package serve

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/session"
)

// blockingServer serves a handler whose OnFrame blocks on "block" until
// release is closed; closes has the OnClose code of every session, by the
// first message its client sent.
type blockingServer struct {
	addr    string
	h       *Handler
	entered chan struct{}
	release chan struct{}

	mu     sync.Mutex
	first  map[*session.Session]string
	closes map[string]int
}

func newBlockingServer(t *testing.T) *blockingServer {
	b := &blockingServer{entered: make(chan struct{}, 1), release: make(chan struct{}),
		first: map[*session.Session]string{}, closes: map[string]int{}}
	b.addr, b.h = serve(t, "adopted", Config{}, Hooks{
		OnFrame: func(s *session.Session, _ bool, data []byte) {
			b.mu.Lock()
			if _, ok := b.first[s]; !ok {
				b.first[s] = string(data)
			}
			b.mu.Unlock()
			if string(data) == "block" {
				b.entered <- struct{}{}
				<-b.release
			}
			_ = s.SendText(data)
		},
		OnClose: func(s *session.Session, code int, _ string) {
			b.mu.Lock()
			b.closes[b.first[s]] = code
			b.mu.Unlock()
		},
	})
	t.Cleanup(b.unblock)
	return b
}

func (b *blockingServer) unblock() {
	select {
	case <-b.release:
	default:
		close(b.release)
	}
}

// closeCode returns the OnClose code of the session whose client first
// sent name, and whether it was called.
func (b *blockingServer) closeCode(name string) (int, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	code, ok := b.closes[name]
	return code, ok
}

func (b *blockingServer) waitClose(t *testing.T, name string) int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if code, ok := b.closeCode(name); ok {
			return code
		}
		time.Sleep(2 * time.Millisecond)
	}
	t.Fatalf("no OnClose for %s", name)
	return 0
}

// clients dials a client that blocks a callback and one that is idle.
func (b *blockingServer) clients(t *testing.T) (blocked, idle *echoClient) {
	blocked, idle = dialEcho(t, b.addr), dialEcho(t, b.addr)
	send(t, idle, "idle")
	expectEcho(t, idle.got, "idle")
	send(t, blocked, "block")
	select {
	case <-b.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("the callback did not start")
	}
	return blocked, idle
}

func send(t *testing.T, c *echoClient, m string) {
	t.Helper()
	write(t, c.ws, websocket.MessageText, []byte(m))
}

// Close drops every connection and returns without waiting for a session
// whose callback is running; that one ends when its callback returns.
func TestCloseSkipsSessionsInCallbacks(t *testing.T) {
	b := newBlockingServer(t)
	blocked, idle := b.clients(t)

	closed := make(chan struct{})
	go func() {
		b.h.Close()
		close(closed)
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close waits for a session whose callback is running")
	}
	if code, ok := b.closeCode("idle"); !ok || code != session.CloseAbnormal {
		t.Errorf("idle session: OnClose %d (called: %v) when Close returned, want %d", code, ok, session.CloseAbnormal)
	}
	if _, ok := b.closeCode("block"); ok {
		t.Error("OnClose ran for the session whose callback has not returned")
	}
	for _, c := range []*echoClient{idle, blocked} {
		for range c.got {
		}
		if websocket.CloseStatus(c.err) != -1 {
			t.Errorf("client read %v, want the connection dropped", c.err)
		}
	}
	b.unblock()
	if code := b.waitClose(t, "block"); code != session.CloseAbnormal {
		t.Errorf("blocked session: OnClose %d, want %d", code, session.CloseAbnormal)
	}
}

// Shutdown waits for every session, those in a callback too; when its ctx
// ends it drops the rest and returns at once.
func TestShutdownWaitsForEverySessionUntilCtxEnds(t *testing.T) {
	t.Run("until every session has ended", func(t *testing.T) {
		b := newBlockingServer(t)
		blocked, idle := b.clients(t)
		done := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			done <- b.h.Shutdown(ctx)
		}()
		for range idle.got {
		}
		if websocket.CloseStatus(idle.err) != websocket.StatusGoingAway {
			t.Errorf("idle client read %v, want close 1001", idle.err)
		}
		select {
		case err := <-done:
			t.Fatalf("Shutdown returned (%v) while a callback runs", err)
		case <-time.After(100 * time.Millisecond):
		}
		b.unblock()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown did not return once the callback returned")
		}
		// The session ended before Shutdown returned.
		if code, ok := b.closeCode("block"); !ok || code != session.CloseGoingAway {
			t.Errorf("blocked session: OnClose %d (called: %v), want %d", code, ok, session.CloseGoingAway)
		}
		for range blocked.got {
		}
	})
	t.Run("until ctx ends", func(t *testing.T) {
		b := newBlockingServer(t)
		blocked, idle := b.clients(t)
		const deadline = 200 * time.Millisecond
		ctx, cancel := context.WithTimeout(context.Background(), deadline)
		defer cancel()
		start := time.Now()
		err := b.h.Shutdown(ctx)
		took := time.Since(start)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want %v", err, context.DeadlineExceeded)
		}
		if took < deadline || took > deadline+time.Second {
			t.Errorf("Shutdown returned after %v, want it at the deadline (%v)", took, deadline)
		}
		if code, ok := b.closeCode("idle"); !ok || code != session.CloseGoingAway {
			t.Errorf("idle session: OnClose %d (called: %v), want %d", code, ok, session.CloseGoingAway)
		}
		if _, ok := b.closeCode("block"); ok {
			t.Error("OnClose ran for the session whose callback has not returned")
		}
		for range idle.got {
		}
		for range blocked.got { // dropped at the deadline
		}
		b.unblock()
		if code := b.waitClose(t, "block"); code != session.CloseAbnormal {
			t.Errorf("blocked session: OnClose %d, want %d", code, session.CloseAbnormal)
		}
	})
}
