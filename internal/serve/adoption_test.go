package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/session"
)

// ownReaderOverConn is a coder/websocket that frames through a bufio.Reader
// of its own over the connection: what it is handed to read through stays
// unused (Accept peeks at and resets the reader it gets, here a fresh one).
func ownReaderOverConn(w http.ResponseWriter, r *http.Request, o *websocket.AcceptOptions) (*websocket.Conn, error) {
	return websocket.Accept(rehijack{w, false}, r, o)
}

// ownReaderOverOurs is a coder/websocket that wraps the reader it is handed
// in a fresh bufio.Reader of its own and frames through that: every byte
// still passes through the hijacked reader, but the wrapper reads ahead.
func ownReaderOverOurs(w http.ResponseWriter, r *http.Request, o *websocket.AcceptOptions) (*websocket.Conn, error) {
	return websocket.Accept(rehijack{w, true}, r, o)
}

// rehijack hands coder/websocket a fresh bufio.Reader in place of the one
// the connection was hijacked with; through, the connection it gets reads
// through that one.
type rehijack struct {
	http.ResponseWriter
	through bool
}

func (h rehijack) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := h.ResponseWriter.(http.Hijacker).Hijack()
	if err != nil {
		return c, brw, err
	}
	if h.through {
		c = readsThrough{c, brw.Reader}
	}
	// Not bufio.NewReader(brw.Reader), which returns a large enough
	// bufio.Reader as it is.
	own := bufio.NewReader(struct{ io.Reader }{brw.Reader})
	return c, bufio.NewReadWriter(own, brw.Writer), nil
}

type readsThrough struct {
	net.Conn
	r io.Reader
}

func (c readsThrough) Read(p []byte) (int, error) { return c.r.Read(p) }

// useCheck and useUpgrade stand in for the reader check and the upgrade
// until the test ends.
func useCheck(t *testing.T, check func() error) {
	old := readerCheck
	readerCheck = check
	t.Cleanup(func() { readerCheck = old })
}

func useUpgrade(t *testing.T, a acceptFunc) {
	old := upgrade
	upgrade = a
	t.Cleanup(func() { upgrade = old })
}

// The check passes with the coder/websocket this module builds with, fails
// with one that reads through a reader of its own, and a handler built
// where it fails runs in fallback and says so, once, at Warn.
func TestReaderAdoptionCheck(t *testing.T) {
	if err := checkAdoption(websocket.Accept); err != nil {
		t.Fatalf("coder/websocket fails the check: %v", err)
	}
	for _, c := range []struct {
		name   string
		accept acceptFunc
	}{
		{"a reader of its own over the connection", ownReaderOverConn},
		{"a reader of its own over the hijacked one", ownReaderOverOurs},
	} {
		err := checkAdoption(c.accept)
		if err == nil {
			t.Errorf("%s: the check passed", c.name)
			continue
		}
		t.Logf("%s: %v", c.name, err)
	}

	useCheck(t, func() error { return checkAdoption(ownReaderOverOurs) })
	var logs bytes.Buffer
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	h, err := NewHandler(sys, Config{Logger: slog.New(slog.NewTextHandler(&logs, nil))}, Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if !h.fallback {
		t.Error("the handler does not fall back")
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 || strings.Count(logs.String(), "\n") != 1 {
		t.Errorf("logged %q, want one warning", logs.String())
	}
}

// serve serves a handler with cfg and hooks in the given mode:
//
//   - "adopted": as this module builds;
//   - "fallback": the reader check made to fail, coder/websocket as it is;
//   - "not adopted": a coder/websocket that reads through a reader of its
//     own (ownReaderOverOurs), which the check catches.
func serve(t *testing.T, mode string, cfg Config, hooks Hooks) (addr string, h *Handler) {
	t.Helper()
	switch mode {
	case "adopted":
		useCheck(t, func() error { return nil })
	case "fallback":
		useCheck(t, func() error { return errors.New("made to fail") })
	case "not adopted":
		useCheck(t, func() error { return checkAdoption(ownReaderOverOurs) })
		useUpgrade(t, ownReaderOverOurs)
	default:
		t.Fatalf("mode %q", mode)
	}
	if cfg.RateLimit == 0 {
		cfg.RateLimit = -1
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	sys := session.NewSystem(nil)
	h, err := NewHandler(sys, cfg, hooks)
	if err != nil {
		t.Fatal(err)
	}
	if h.fallback != (mode != "adopted") {
		t.Fatalf("%s: fallback %v", mode, h.fallback)
	}
	ts := httptest.NewServer(h)
	t.Cleanup(func() {
		h.Close()
		ts.Close()
		sys.Shutdown()
	})
	return ts.Listener.Addr().String(), h
}

// echoServer serves a handler that echoes every message, pinging its
// clients every ping (never if negative), in the given mode (see serve).
func echoServer(t *testing.T, mode string, ping time.Duration) (addr string) {
	addr, _ = serve(t, mode, Config{Limits: Limits{PingInterval: ping, MaxMessageSize: 1 << 20}}, Hooks{
		OnFrame: func(s *session.Session, binary bool, data []byte) {
			_ = session.SendFrame(s, session.Frame{Data: data, Binary: binary})
		},
	})
	return addr
}

// TestServedWithoutAdoption runs clients against the server in each mode:
// every message must come back whole and in order, whether frames arrive
// one per TCP write or many at once, right behind the handshake, between
// pings (the server's and the client's), large, or from connections idle
// long enough to be parked. Most cases run on a server that does not ping,
// so that nothing the client sends can make up for a message the server
// has read from the socket and not seen: the client waits for its echo,
// which then never comes.
func TestServedWithoutAdoption(t *testing.T) {
	for _, mode := range []string{"adopted", "fallback", "not adopted"} {
		t.Run(mode, func(t *testing.T) {
			quiet := echoServer(t, mode, -1)
			pinging := echoServer(t, mode, 5*time.Millisecond)
			t.Run("first frames behind the handshake", func(t *testing.T) {
				var want []string
				var frames [][]byte
				for i := range 3 {
					want = append(want, fmt.Sprintf("early-%d", i))
					frames = append(frames, maskedFrame(0x81, []byte(want[i])))
				}
				c := dialRaw(t, quiet, bytes.Join(frames, nil))
				c.expect(t, want...)
				c.write(t, maskedFrame(0x81, []byte("later")))
				c.expect(t, "later")
			})
			t.Run("bursts in one write", func(t *testing.T) { bursts(t, quiet) })
			t.Run("bursts under the server's pings", func(t *testing.T) { bursts(t, pinging) })
			t.Run("pings between messages", func(t *testing.T) {
				c := dialEcho(t, pinging)
				ws, got := c.ws, c.got
				for i := range 30 {
					m := fmt.Sprintf("between-%d", i)
					write(t, ws, websocket.MessageText, []byte(m))
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					err := ws.Ping(ctx)
					cancel()
					if err != nil {
						t.Fatalf("ping: %v", err)
					}
					expectEcho(t, got, m)
					if i%10 == 9 {
						time.Sleep(120 * time.Millisecond)
					}
				}
			})
			t.Run("large message", func(t *testing.T) {
				c := dialEcho(t, quiet)
				ws, got := c.ws, c.got
				big := bytes.Repeat([]byte("0123456789abcdef"), 300<<10/16)
				write(t, ws, websocket.MessageBinary, big)
				write(t, ws, websocket.MessageText, []byte("after"))
				expectEcho(t, got, string(big), "after")

				raw := dialRaw(t, quiet, nil)
				raw.write(t, append(maskedFrame(0x81, big[:200<<10]), maskedFrame(0x81, []byte("small"))...))
				raw.expect(t, string(big[:200<<10]), "small")
			})
			t.Run("idle connections that later send", func(t *testing.T) {
				const n = 30
				cs := make([]*echoClient, n)
				for i := range cs {
					cs[i] = dialEcho(t, quiet)
					write(t, cs[i].ws, websocket.MessageText, []byte("hello"))
					expectEcho(t, cs[i].got, "hello")
				}
				time.Sleep(300 * time.Millisecond)
				for i, c := range cs {
					for k := range 3 {
						write(t, c.ws, websocket.MessageText, fmt.Appendf(nil, "%d-%d", i, k))
					}
				}
				for i, c := range cs {
					expectEcho(t, c.got, fmt.Sprintf("%d-0", i), fmt.Sprintf("%d-1", i), fmt.Sprintf("%d-2", i))
				}
			})
		})
	}
}

// bursts writes rounds of messages, each round in one TCP write with pings
// and unasked pongs among the messages, and expects every echo in order.
func bursts(t *testing.T, addr string) {
	c := dialRaw(t, addr, nil)
	n := 0
	for round := range 12 {
		var burst [][]byte
		var want []string
		for i := range 40 {
			size := 1 + (round*40+i)%300
			if i%13 == 0 {
				size = 5000 + i
			}
			m := fmt.Sprintf("%d:", n) + strings.Repeat("m", size)
			n++
			want = append(want, m)
			burst = append(burst, maskedFrame(0x81, []byte(m)))
			switch i % 7 {
			case 2:
				burst = append(burst, maskedFrame(0x89, []byte("ping")))
			case 5:
				burst = append(burst, maskedFrame(0x8a, []byte("unasked")))
			}
		}
		c.write(t, bytes.Join(burst, nil))
		c.expect(t, want...)
		if round%4 == 3 {
			time.Sleep(120 * time.Millisecond) // idle: parked where it can be
		}
	}
}

// echoClient is a coder/websocket client whose messages are read into got;
// err is why reading ended, once got is closed.
type echoClient struct {
	ws  *websocket.Conn
	got chan string
	err error
}

// dialEcho dials with coder/websocket and reads on.
func dialEcho(t *testing.T, addr string) *echoClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr, nil)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ws.SetReadLimit(-1)
	c := &echoClient{ws: ws, got: make(chan string, 1024)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(c.got)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				c.err = err
				return
			}
			c.got <- string(b)
		}
	}()
	t.Cleanup(func() {
		_ = ws.CloseNow()
		<-done
	})
	return c
}

func write(t *testing.T, ws *websocket.Conn, typ websocket.MessageType, p []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := ws.Write(ctx, typ, p); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func expectEcho(t *testing.T, got chan string, want ...string) {
	t.Helper()
	for i, w := range want {
		select {
		case m, ok := <-got:
			if !ok {
				t.Fatalf("the connection ended before echo %d of %d", i+1, len(want))
			}
			if m != w {
				t.Fatalf("echo %d: %.40q (%d bytes), want %.40q (%d bytes)", i+1, m, len(m), w, len(w))
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no echo %d of %d (%.40q)", i+1, len(want), w)
		}
	}
}

// maskedFrame is one final frame as a client sends it.
func maskedFrame(b0 byte, payload []byte) []byte {
	key := [4]byte{0x1f, 0x82, 0x6b, 0xd4}
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126)
		out = binary.BigEndian.AppendUint16(out, uint16(n))
	default:
		out = append(out, 0x80|127)
		out = binary.BigEndian.AppendUint64(out, uint64(n))
	}
	out = append(out, key[:]...)
	for i, b := range payload {
		out = append(out, b^key[i%4])
	}
	return out
}

// rawClient is a client on a bare TCP connection: what it writes reaches
// the server in the writes it makes. It answers pings and collects the
// messages it reads.
type rawClient struct {
	nc    net.Conn
	mu    sync.Mutex // one write at a time
	got   chan string
	done  chan struct{}
	close []byte // the payload of the server's close frame, once done
}

// dialRaw upgrades a connection, sending first in the same write as the
// handshake request.
func dialRaw(t *testing.T, addr string, first []byte) *rawClient {
	t.Helper()
	c, _ := dialRawWith(t, addr, "", first)
	return c
}

// dialRawWith is dialRaw with header lines ("Name: value\r\n"...) added
// to the upgrade request; it returns the upgrade's response too.
func dialRawWith(t *testing.T, addr, header string, first []byte) (*rawClient, *http.Response) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Write(append(upgradeRequest(header), first...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(nc)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade: %s", resp.Status)
	}
	_ = nc.SetReadDeadline(time.Time{})
	c := &rawClient{nc: nc, got: make(chan string, 1024), done: make(chan struct{})}
	go c.readLoop(br)
	t.Cleanup(func() {
		_ = nc.Close()
		<-c.done
	})
	return c, resp
}

// upgradeRequest is a client's WebSocket upgrade request with RFC 6455's
// example key, and header lines ("Name: value\r\n"...) added.
func upgradeRequest(header string) []byte {
	return []byte("GET / HTTP/1.1\r\nHost: troupe.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" + header + "\r\n")
}

func (c *rawClient) write(t *testing.T, b []byte) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, err := c.nc.Write(b); err != nil {
		t.Fatalf("write: %v", err)
	}
}

func (c *rawClient) expect(t *testing.T, want ...string) {
	t.Helper()
	expectEcho(t, c.got, want...)
}

// readLoop reads the server's frames (unmasked, one per message).
func (c *rawClient) readLoop(r *bufio.Reader) {
	defer close(c.done)
	defer close(c.got)
	for {
		var h [2]byte
		if _, err := io.ReadFull(r, h[:]); err != nil {
			return
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var x [2]byte
			if _, err := io.ReadFull(r, x[:]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(x[:]))
		case 127:
			var x [8]byte
			if _, err := io.ReadFull(r, x[:]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(x[:])
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		switch h[0] & 0x0f {
		case 0x1, 0x2:
			c.got <- string(payload)
		case 0x9:
			c.mu.Lock()
			_, err := c.nc.Write(maskedFrame(0x8a, payload))
			c.mu.Unlock()
			if err != nil {
				return
			}
		case 0x8:
			c.close = payload
			c.mu.Lock()
			_, _ = c.nc.Write(maskedFrame(0x88, payload))
			c.mu.Unlock()
			return
		}
	}
}
