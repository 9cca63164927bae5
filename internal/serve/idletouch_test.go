package serve

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/session"
)

// straddleConn holds back the last byte of each write and sends it with the
// next one: every frame's tail arrives together with the next frame's head,
// so the server's read loop waits inside a message, never between two.
type straddleConn struct {
	net.Conn
	mu   sync.Mutex
	held []byte
	on   bool
}

func (c *straddleConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on || len(p) == 0 {
		return c.Conn.Write(p)
	}
	out := append(append([]byte(nil), c.held...), p[:len(p)-1]...)
	c.held = []byte{p[len(p)-1]}
	if _, err := c.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// A client that keeps sending is not closed for idleness, however its
// frames are cut: the read loop tells the heartbeat of messages only now and
// then (touchEvery), so a client whose frames always arrive split across
// reads is seen through the heartbeat's probe.
func TestClientSendingInPiecesIsNotIdle(t *testing.T) {
	addr, _ := serve(t, "adopted", Config{Limits: Limits{IdleTimeout: 300 * time.Millisecond, PingInterval: -1}}, Hooks{
		OnFrame: func(s *session.Session, _ bool, data []byte) { _ = s.SendText(data) },
	})
	var sc *straddleConn
	tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, a)
		if err != nil {
			return nil, err
		}
		sc = &straddleConn{Conn: c}
		return sc, nil
	}}
	ws, _, err := websocket.Dial(context.Background(), "ws://"+addr, &websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	sc.mu.Lock()
	sc.on = true
	sc.mu.Unlock()
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := ws.Read(context.Background()); err != nil {
				ended <- err
				return
			}
		}
	}()
	// Six idle timeouts' worth of messages, one every tenth of it.
	for i := range 60 {
		if err := ws.Write(context.Background(), websocket.MessageText, []byte(fmt.Sprint("m", i))); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		select {
		case err := <-ended:
			t.Fatalf("closed after %d messages: %v", i, err)
		case <-time.After(30 * time.Millisecond):
		}
	}
}
