package serve

import (
	"context"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/session"
)

func ping(t *testing.T, ws *websocket.Conn) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return ws.Ping(ctx)
}

// A client's pings count as activity for the idle timeout: a client that
// only pings, three times per IdleTimeout, stays open well past it; one
// that sends nothing is closed with 1008.
func TestClientPingsKeepTheConnectionOpen(t *testing.T) {
	const idle = 300 * time.Millisecond
	addr, _ := serve(t, "adopted", Config{Limits: Limits{IdleTimeout: idle, PingInterval: -1}}, Hooks{
		OnFrame: func(s *session.Session, _ bool, data []byte) { _ = s.SendText(data) },
	})
	pinger, silent := dialEcho(t, addr), dialEcho(t, addr)
	start := time.Now()
	for time.Since(start) < 3*idle {
		time.Sleep(idle / 3)
		if err := ping(t, pinger.ws); err != nil {
			t.Fatalf("ping after %v: %v", time.Since(start).Round(time.Millisecond), err)
		}
	}
	send(t, pinger, "still here")
	expectEcho(t, pinger.got, "still here")

	select {
	case _, ok := <-silent.got:
		if ok {
			t.Fatal("the silent client got a message")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the silent client was not closed")
	}
	if code := websocket.CloseStatus(silent.err); code != websocket.StatusPolicyViolation {
		t.Errorf("the silent client: %v, want a close with 1008", silent.err)
	}
}

// The write deadline a batch sets on the connection does not outlive it:
// the server's pings, and its pongs to the client's pings, written long
// after the last batch, go out.
func TestPingsAfterTheLastBatchsDeadline(t *testing.T) {
	addr, _ := serve(t, "adopted", Config{Limits: Limits{
		WriteTimeout: 30 * time.Millisecond,
		PingInterval: 100 * time.Millisecond,
		PongTimeout:  2 * time.Second,
		IdleTimeout:  -1,
	}}, Hooks{
		OnFrame: func(s *session.Session, _ bool, data []byte) { _ = s.SendText(data) },
	})
	c := dialEcho(t, addr)
	send(t, c, "batch")
	expectEcho(t, c.got, "batch")
	// Several of the server's pings, each long after the batch's deadline.
	time.Sleep(500 * time.Millisecond)
	if err := ping(t, c.ws); err != nil {
		t.Fatalf("the client's ping: %v (the connection ended: %v)", err, c.err)
	}
	send(t, c, "after")
	expectEcho(t, c.got, "after")
}
