package troupetest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/troupehq/troupe/transport"
)

// echoServer serves a transport.Conn the way a session does, in the
// small: it answers every message with itself until the client closes,
// closes with 4000 on "bye", and drops the connection on "drop".
type echoServer struct{ ended chan error }

func (e echoServer) ServeConn(ctx context.Context, c transport.Conn, _ transport.Info) error {
	for {
		m, err := c.Read(ctx)
		if err != nil {
			var ce *transport.CloseError
			if errors.As(err, &ce) {
				_ = c.Close(ce.Code, ce.Reason)
			}
			e.ended <- err
			return err
		}
		switch string(m.Data) {
		case `{"type":"bye"}`:
			_ = c.Close(4000, "bye")
		case `{"type":"drop"}`:
			_ = c.CloseNow()
		default:
			if err := c.Write([]transport.Message{m, m}, time.Now().Add(wait)); err != nil {
				e.ended <- err
				return err
			}
		}
	}
}

// TestPipeConn checks the in-memory connection against a server of its
// own, while troupe.Server.ServeConn does not exist yet.
func TestPipeConn(t *testing.T) {
	srv := echoServer{ended: make(chan error, 1)}
	c := pipe(t, srv)
	var n int
	if err := c.Request("n", 7, &n); err != nil || n != 7 {
		t.Fatalf("Request: %d, %v", n, err)
	}
	// The second copy of the answer stays queued.
	if c.Expect("n", &n); n != 7 {
		t.Fatalf("Expect: %d", n)
	}
	c.Close()
	var ce *transport.CloseError
	if err := <-srv.ended; !errors.As(err, &ce) || ce.Code != 1000 {
		t.Fatalf("server read %v, want a close 1000", err)
	}

	c = pipe(t, srv)
	c.Send("bye", nil)
	if code, reason := c.ExpectClose(); code != 4000 || reason != "bye" {
		t.Fatalf("ExpectClose: %d %q", code, reason)
	}
	if err := <-srv.ended; !errors.As(err, &ce) || ce.Code != 4000 {
		t.Fatalf("server read %v after its close, want 4000", err)
	}

	c = pipe(t, srv)
	c.Send("drop", nil)
	if code, _ := c.ExpectClose(); code != 1006 {
		t.Fatalf("ExpectClose after a drop: %d, want 1006", code)
	}
	if err := <-srv.ended; err == nil {
		t.Fatal("server read nil after CloseNow")
	}

	// Cleanup drops a client the test left open (this check runs after
	// the client's cleanup, registered later).
	t.Cleanup(func() {
		if err := <-srv.ended; err == nil {
			t.Error("server read nil after cleanup")
		}
	})
	c = pipe(t, srv)
	c.Send("x", nil)
	c.Expect("x", nil)
}
