package serve

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/transport"
)

// controlFrame is a server's unmasked, final control frame.
func controlFrame(opcode byte, payload string) []byte {
	return append([]byte{0x80 | opcode, byte(len(payload))}, payload...)
}

// dataFrame is a frame as frameHeader heads it.
func dataFrame(n int) []byte {
	return append(frameHeader(nil, false, n), bytes.Repeat([]byte{'x'}, n)...)
}

// The scan finds the end of every frame, whatever the pieces the stream
// comes in, for every length encoding.
func TestFrameScanFindsEveryFrameEnd(t *testing.T) {
	frames := [][]byte{
		controlFrame(0x9, ""),
		controlFrame(0xa, strings.Repeat("p", 125)),
		dataFrame(125), dataFrame(126), dataFrame(65535), dataFrame(65536),
		controlFrame(0x8, "\x03\xe8"+strings.Repeat("r", 123)),
	}
	var stream []byte
	ends := map[int]bool{0: true}
	for _, f := range frames {
		stream = append(stream, f...)
		ends[len(stream)] = true
	}
	for _, piece := range []int{1, 2, 3, 7, 64, 1000} {
		var f frameScan
		for at := 0; at < len(stream); at += piece {
			end := min(at+piece, len(stream))
			f.feed(stream[at:end])
			if piece == 1 && f.boundary() != ends[end] {
				t.Fatalf("pieces of 1: at %d boundary is %v", end, f.boundary())
			}
			if piece > 1 && ends[end] && !f.boundary() {
				t.Fatalf("pieces of %d: at %d, a frame end, no boundary", piece, end)
			}
		}
		if !f.boundary() || !f.close {
			t.Fatalf("pieces of %d: at the end boundary %v close %v", piece, f.boundary(), f.close)
		}
		// Data frames are ours to write: coder/websocket writing one
		// means it is no longer only writing control frames.
		if !f.odd {
			t.Fatalf("pieces of %d: data frames not noticed", piece)
		}
	}
}

func TestFrameScanTellsControlFramesFromTheRest(t *testing.T) {
	for _, c := range []struct {
		name  string
		frame []byte
		odd   bool
	}{
		{"ping", controlFrame(0x9, "x"), false},
		{"pong", controlFrame(0xa, ""), false},
		{"close", controlFrame(0x8, "\x03\xe8"), false},
		{"text", dataFrame(3), true},
		{"binary", append(frameHeader(nil, true, 1), 0), true},
		{"continuation", []byte{0x80, 0}, true},
		{"fragmented ping", []byte{0x09, 0}, true},
		{"rsv1", []byte{0xc9, 0}, true},
		{"reserved opcode", []byte{0x8b, 0}, true},
		{"masked", []byte{0x89, 0x81, 1, 2, 3, 4, 'x'}, true},
		{"http", []byte("HTTP/1.1 101 Switching Protocols\r\n"), true},
	} {
		var f frameScan
		f.feed(c.frame)
		if f.odd != c.odd {
			t.Errorf("%s: odd %v, want %v", c.name, f.odd, c.odd)
		}
		if c.name != "http" && !f.boundary() {
			t.Errorf("%s: the frame did not end where it ends", c.name)
		}
	}
}

// recordConn is a connection that keeps what is written to it.
type recordConn struct {
	net.Conn
	mu  sync.Mutex
	out []byte
}

func (c *recordConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.out = append(c.out, p...)
	return len(p), nil
}

func (c *recordConn) written() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out)
}

// A batch that comes while coder/websocket has written part of a frame
// (its frame writer is 64 bytes: a pong of 125 comes in two writes) waits
// for the rest: its frames go after, never inside.
func TestDirectFramesWaitForAFrameWrittenInPieces(t *testing.T) {
	conn := &recordConn{}
	w := &corkWriter{conn: conn}
	pong := controlFrame(0xa, strings.Repeat("p", 125))
	if _, err := w.Write(pong[:64]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		w.cork()
		_, err := w.frames([]transport.Message{{Data: []byte("m1")}, {Data: []byte("m2")}}, false)
		if e := w.uncork(); err == nil {
			err = e
		}
		done <- err
	}()
	time.Sleep(20 * time.Millisecond) // time for a wrong batch to write
	if got := conn.written(); !bytes.Equal(got, pong[:64]) {
		t.Fatalf("the batch was written inside the pong: %q", got)
	}
	if _, err := w.Write(pong[64:]); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("frames: %v", err)
	}
	want := append(append(bytes.Clone(pong), 0x81, 2, 'm', '1'), 0x81, 2, 'm', '2')
	if got := conn.written(); !bytes.Equal(got, want) {
		t.Fatalf("stream:\n got %q\nwant %q", got, want)
	}
}

// No data frame follows coder/websocket's close frame, and a batch waiting
// for a frame to end is let go when the connection closes.
func TestDirectFramesEndWithTheConnection(t *testing.T) {
	conn := &recordConn{}
	w := &corkWriter{conn: conn}
	if _, err := w.Write(controlFrame(0x8, "\x03\xe8")); err != nil {
		t.Fatal(err)
	}
	if _, err := w.frames([]transport.Message{{Data: []byte("late")}}, false); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("after the close frame: %v, want net.ErrClosed", err)
	}

	w = &corkWriter{conn: conn}
	if _, err := w.Write(controlFrame(0xa, "pong")[:3]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := w.frames([]transport.Message{{Data: []byte("late")}}, false); done <- err }()
	time.Sleep(10 * time.Millisecond)
	w.close()
	if err := <-done; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("closed while waiting: %v, want net.ErrClosed", err)
	}
}

// If coder/websocket writes a data frame (something wrote a message
// through it), the connection goes on through coder/websocket: every
// message still arrives, in order.
func TestDirectFramingFallsBackWhenCoderWritesData(t *testing.T) {
	c, client := wsPair(t, false)
	deadline := time.Now().Add(5 * time.Second)
	if err := c.Write([]transport.Message{{Data: []byte("a")}}, deadline); err != nil {
		t.Fatal(err)
	}
	if err := c.ws.Write(context.Background(), websocket.MessageText, []byte("b")); err != nil {
		t.Fatal(err)
	}
	if err := c.Write([]transport.Message{{Data: []byte("c")}, {Data: []byte("d")}}, deadline); err != nil {
		t.Fatal(err)
	}
	if c.direct {
		t.Error("still framing directly after coder/websocket wrote a data frame")
	}
	want := []wireFrame{{false, "a"}, {false, "b"}, {false, "c"}, {false, "d"}}
	if got := readFrames(t, client, len(want)); !equalFrames(got, want) {
		t.Fatalf("frames on the wire:\n got %v\nwant %v", got, want)
	}
}

// slowReadConn is a client connection that reads 8 KiB every 20 ms.
type slowReadConn struct{ net.Conn }

func (c slowReadConn) Read(p []byte) (int, error) {
	time.Sleep(20 * time.Millisecond)
	return c.Conn.Read(p[:min(len(p), 8<<10)])
}

// A ping written while a long batch goes out to a slow client goes in
// between two of its frames: coder/websocket gives its control frames a
// deadline of their own and drops the connection past it, so a ping (or a
// pong) must not wait for the whole batch.
func TestPingGoesOutInsideALongBatch(t *testing.T) {
	bothFramings(t, testPingGoesOutInsideALongBatch)
}

func testPingGoesOutInsideALongBatch(t *testing.T, direct bool) {
	server := make(chan *wsConn, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc := &hijackCapture{ResponseWriter: w}
		ws, err := websocket.Accept(hc, r, nil)
		if err != nil {
			t.Errorf("accept: %v", err)
			close(server)
			return
		}
		_ = hc.conn.(*net.TCPConn).SetWriteBuffer(8 << 10)
		server <- &wsConn{ws: ws, raw: hc.conn, cork: hc.cork, cc: hc.cc, direct: direct}
	}))
	t.Cleanup(ts.Close)
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		_ = c.(*net.TCPConn).SetReadBuffer(8 << 10)
		return slowReadConn{c}, nil
	}}
	var frames, framesAtPing atomic.Int32
	framesAtPing.Store(-1)
	client, _, err := websocket.Dial(context.Background(), "ws"+strings.TrimPrefix(ts.URL, "http"),
		&websocket.DialOptions{HTTPClient: &http.Client{Transport: tr}, OnPingReceived: func(context.Context, []byte) bool {
			framesAtPing.CompareAndSwap(-1, frames.Load())
			return true
		}})
	if err != nil {
		t.Fatal(err)
	}
	c := <-server
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() { _ = client.CloseNow(); _ = c.CloseNow() })
	go func() {
		for {
			if _, _, err := client.Read(context.Background()); err != nil {
				return
			}
			frames.Add(1)
		}
	}()

	const n = 64
	var batch []transport.Message
	for range n {
		batch = append(batch, transport.Message{Data: bytes.Repeat([]byte{'x'}, 4<<10)})
	}
	written := make(chan error, 1)
	go func() { written <- c.Write(batch, time.Now().Add(time.Minute)) }()
	time.Sleep(100 * time.Millisecond) // the batch is under way
	ctx, cancel := context.WithCancel(context.Background())
	pinged := make(chan struct{})
	go func() {
		defer close(pinged)
		_ = c.ws.Ping(ctx) // nothing reads the pong here: only its writing counts
	}()
	if err := <-written; err != nil {
		t.Fatalf("Write: %v", err)
	}
	deadline := time.Now().Add(time.Minute)
	for framesAtPing.Load() < 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-pinged
	if at := framesAtPing.Load(); at < 0 || at >= n {
		t.Fatalf("the client got the ping after %d of the batch's %d frames: it waited for the whole batch", at, n)
	}
}
