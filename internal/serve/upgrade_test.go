package serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

// The upgrade's response is whole whether the handler writes it (under
// net/http's own ResponseWriter) or net/http does (under an application's
// wrapper, which must see the 101), and the connection works behind it.
func TestUpgradeResponse(t *testing.T) {
	echo := Hooks{OnFrame: func(s *session.Session, binary bool, data []byte) {
		_ = session.SendFrame(s, session.Frame{Data: data, Binary: binary})
	}}
	check := func(t *testing.T, resp *http.Response) {
		t.Helper()
		want := map[string]string{
			"Upgrade":                "websocket",
			"Connection":             "Upgrade",
			"Sec-Websocket-Accept":   "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", // RFC 6455's example key
			"Sec-Websocket-Protocol": SubprotocolNDJSON,
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("%s: %q, want %q", k, got, v)
			}
		}
	}
	const offer = "Sec-WebSocket-Protocol: " + SubprotocolNDJSON + "\r\n"

	t.Run("net/http's writer", func(t *testing.T) {
		addr, _ := serve(t, "adopted", Config{}, echo)
		c, resp := dialRawWith(t, addr, offer, maskedFrame(0x81, []byte("behind")))
		check(t, resp)
		if d := resp.Header.Get("Date"); d != "" {
			// net/http's chunk writer adds a Date; the handler's 101 has none.
			t.Errorf("the 101 went through net/http (Date %q)", d)
		}
		c.expect(t, "behind")
		c.write(t, maskedFrame(0x81, []byte("after")))
		c.expect(t, "after")
	})

	t.Run("an application's writer", func(t *testing.T) {
		_, h := serve(t, "adopted", Config{}, echo)
		statuses := make(chan int, 4)
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h.ServeHTTP(&statusRecorder{ResponseWriter: w, statuses: statuses}, r)
		}))
		t.Cleanup(ts.Close)
		c, resp := dialRawWith(t, ts.Listener.Addr().String(), offer, nil)
		check(t, resp)
		select {
		case got := <-statuses:
			if got != http.StatusSwitchingProtocols {
				t.Errorf("the application's writer was told %d, want 101", got)
			}
		default:
			// The response was read: a WriteHeader that came is queued.
			t.Error("the application's writer was told no status")
		}
		c.write(t, maskedFrame(0x81, []byte("through")))
		c.expect(t, "through")
	})
}

// statusRecorder is a middleware's ResponseWriter that records statuses.
type statusRecorder struct {
	http.ResponseWriter
	statuses chan int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.statuses <- code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// A header field cannot end the 101 or add a field of its own: a name that
// is not a token is left out, and line breaks in a value become spaces.
func TestAppendSwitchingKeepsFieldsApart(t *testing.T) {
	hdr := http.Header{
		"Upgrade":     {"websocket"},
		"X-Note":      {"a\r\nSet-Cookie: stolen=1\r\n\r\nbody", "second\tvalue"},
		"Bad Name":    {"x"},
		"Bad\r\nName": {"y"},
		// A middleware's: after a 101 the bytes are not a body.
		"Content-Length":    {"5"},
		"Transfer-Encoding": {"chunked"},
	}
	raw := appendSwitching(nil, hdr)
	resp, err := http.ReadResponse(bufio.NewReader(bytes.NewReader(raw)), nil)
	if err != nil {
		t.Fatalf("%q: %v", raw, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Errorf("status %d", resp.StatusCode)
	}
	if got := resp.Header.Get("Set-Cookie"); got != "" {
		t.Errorf("a value added Set-Cookie: %q", got)
	}
	if got := resp.Header.Values("X-Note"); len(got) != 2 || got[0] != "a  Set-Cookie: stolen=1    body" || got[1] != "second\tvalue" {
		t.Errorf("X-Note: %q", got)
	}
	if len(resp.Header) != 2 || resp.ContentLength > 0 || len(resp.TransferEncoding) > 0 {
		t.Errorf("fields %v, want Upgrade and X-Note", resp.Header)
	}
	if !bytes.HasSuffix(raw, []byte("\r\n\r\n")) || bytes.Count(raw, []byte("\r\n\r\n")) != 1 {
		t.Errorf("the response does not end once, at its end: %q", raw)
	}
}

// The handler's 101 goes out under the handshake's deadline: net/http
// cleared the connection's at the hijack, and a client that does not read
// must not hold the handshake's goroutine.
func TestSwitchingWriteHasADeadline(t *testing.T) {
	srv, cli := net.Pipe() // a write waits for a read that never comes
	defer cli.Close()
	defer srv.Close()
	h := &hijackCapture{ResponseWriter: httptest.NewRecorder(), timeout: 20 * time.Millisecond}
	h.ResponseWriter.Header().Set("Upgrade", "websocket")
	done := make(chan error, 1)
	go func() { done <- h.writeSwitching(srv, nil, bufio.NewWriter(srv)) }()
	select {
	case err := <-done:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("write: %v, want the deadline's error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the 101's write waits for a client that does not read")
	}
}

// A 101 whose write fails leaves the request answered: coder/websocket's
// error reply after it goes nowhere, and net/http logs nothing.
func TestFailedSwitchingWriteIsQuiet(t *testing.T) {
	_, h := serve(t, "adopted", Config{}, Hooks{})
	var logs bytes.Buffer
	ts := httptest.NewUnstartedServer(h)
	ts.Config.ErrorLog = log.New(&syncWriter{w: &logs}, "", 0)
	ts.Listener = failingWrites{ts.Listener}
	ts.Start()
	defer ts.Close()
	nc, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_, _ = nc.Write(upgradeRequest(""))
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := nc.Read(make([]byte, 64)); err == nil || n > 0 {
		t.Errorf("read %d bytes (%v), want the connection closed with nothing written", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := h.Shutdown(ctx); err != nil { // waits for ServeHTTP to return
		t.Fatal(err)
	}
	if s := logs.String(); s != "" {
		t.Errorf("net/http logged %q", s)
	}
}

// failingWrites is a listener whose connections fail every write.
type failingWrites struct{ net.Listener }

func (l failingWrites) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return failingConn{c}, nil
}

type failingConn struct{ net.Conn }

func (failingConn) Write([]byte) (int, error) { return 0, errors.New("made to fail") }

// syncWriter serialises writes to w, for a logger written from handlers.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// On a TCP connection the 101 is tried without waiting first: a client that
// reset the connection is an error there too, not a 101 taken as sent.
func TestSwitchingWriteToAResetClientFails(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cli, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	raw := newRawWriter(srv)
	if raw == nil {
		t.Skip("no raw writes on this platform")
	}
	_ = cli.(*net.TCPConn).SetLinger(0) // close with a reset
	_ = cli.Close()
	h := &hijackCapture{ResponseWriter: httptest.NewRecorder(), timeout: time.Second}
	h.ResponseWriter.Header().Set("Upgrade", "websocket")
	var werr error
	for range 3 { // the reset may still be on its way for the first write
		if werr = h.writeSwitching(srv, raw, bufio.NewWriter(srv)); werr != nil {
			break
		}
	}
	if werr == nil {
		t.Error("the 101 was written to a client that reset the connection")
	}
}

// A held 101 is not lost when a caller writes or flushes instead of
// hijacking: it goes to the ResponseWriter first, as net/http would have
// sent it by then.
func TestHeldSwitchingIsReleased(t *testing.T) {
	for _, how := range []string{"write", "flush"} {
		rec := httptest.NewRecorder()
		h := &hijackCapture{ResponseWriter: rec, hold: true}
		h.WriteHeader(http.StatusSwitchingProtocols)
		if rec.Code != http.StatusOK || rec.Flushed || rec.Body.Len() > 0 {
			t.Fatalf("%s: a held 101 reached the writer before anything else (code %d)", how, rec.Code)
		}
		switch how {
		case "write":
			_, _ = h.Write([]byte("x"))
		case "flush":
			h.Flush()
		}
		if rec.Code != http.StatusSwitchingProtocols {
			t.Errorf("%s: the writer got status %d, want the held 101", how, rec.Code)
		}
	}
}
