package troupetest

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
)

// wait bounds every wait for the server: a dial, a write, an expected
// message, an answer, a close. It only turns a hang into a failure.
const wait = 5 * time.Second

// Server is a *troupe.Server listening on 127.0.0.1 for the duration of a
// test.
type Server struct {
	// URL is the server's WebSocket address, ws://127.0.0.1:port, with no
	// path: the server is served at every path.
	URL string

	t  testing.TB
	ts *httptest.Server
}

// NewServer serves srv on a new port of 127.0.0.1. At the test's cleanup it
// shuts srv down gracefully (troupe.Server.Shutdown: every session is
// closed with 1001 after its queued messages), then closes srv and the
// listener; clients dialled after NewServer are closed before that.
func NewServer(t testing.TB, srv *troupe.Server) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("troupetest: listen on 127.0.0.1: %v", err)
	}
	ts := &httptest.Server{Listener: ln, Config: &http.Server{Handler: srv}}
	ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("troupetest: Shutdown: %v", err)
		}
		_ = srv.Close()
		// httptest.Server.Close does not wait for connections upgraded to
		// WebSockets: Troupe has closed those above.
		ts.Close()
	})
	return &Server{URL: "ws" + strings.TrimPrefix(ts.URL, "http"), t: t, ts: ts}
}

// Dial connects a new WebSocket client to the server (at s.URL) and closes
// it at the test's cleanup. The client reports failures through t.
func (s *Server) Dial(t testing.TB) *Client {
	t.Helper()
	return dial(t, s.URL, nil, s.ts.Client())
}

// Dial connects a WebSocket client to url (ws://…), sending header with the
// upgrade request, and closes it at the test's cleanup. It is for a server
// the test serves itself, behind its own routes or authorization (a token
// in the header or the query): Server.Dial is Dial(t, s.URL, nil).
//
// A refused upgrade fails the test with the HTTP status.
func Dial(t testing.TB, url string, header http.Header) *Client {
	t.Helper()
	tr := &http.Transport{Proxy: nil} // loopback: never through a proxy
	defer tr.CloseIdleConnections()
	return dial(t, url, header, &http.Client{Transport: tr})
}

func dial(t testing.TB, url string, header http.Header, hc *http.Client) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	ws, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: hc, HTTPHeader: header})
	if err != nil {
		if resp != nil {
			t.Fatalf("troupetest: dial %s: HTTP %d: %v", url, resp.StatusCode, err)
		}
		t.Fatalf("troupetest: dial %s: %v", url, err)
	}
	// A room.joined of a large room, or a test's large message, passes
	// the default limit of 32 KiB.
	ws.SetReadLimit(64 << 20)
	c := newClient(t, url)
	wc := &wsClient{ws: ws, c: c, done: make(chan struct{})}
	c.conn = wc
	go wc.read()
	t.Cleanup(c.cleanup)
	return c
}

// wsClient is the WebSocket end of a Client: a goroutine reads every frame
// into the client's queue until the connection ends.
type wsClient struct {
	ws   *websocket.Conn
	c    *Client
	done chan struct{} // closed when read has returned
}

func (w *wsClient) read() {
	defer close(w.done)
	for {
		typ, data, err := w.ws.Read(context.Background())
		if err != nil {
			code, reason := int(websocket.CloseStatus(err)), ""
			var ce websocket.CloseError
			if errors.As(err, &ce) {
				reason = ce.Reason
			}
			if code < 0 {
				code = int(websocket.StatusAbnormalClosure)
			}
			w.c.end(code, reason, err)
			return
		}
		w.c.deliver(data, typ == websocket.MessageBinary)
	}
}

func (w *wsClient) write(data []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return w.ws.Write(ctx, websocket.MessageText, data)
}

func (w *wsClient) close(code int, reason string) error {
	return w.ws.Close(websocket.StatusCode(code), reason)
}

func (w *wsClient) closeNow() {
	_ = w.ws.CloseNow()
	<-w.done
}
