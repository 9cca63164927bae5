package serve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/transport"
)

// wsPair returns the server side of a WebSocket connection as the handler
// builds it (raw connection, cork, frame reader, direct framing), and the
// client side, which negotiated the ndjson subprotocol if ndjson is set.
func wsPair(t *testing.T, ndjson bool) (*wsConn, *websocket.Conn) {
	t.Helper()
	server := make(chan *wsConn, 1)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hc := &hijackCapture{ResponseWriter: w}
		ws, err := websocket.Accept(hc, r, &websocket.AcceptOptions{Subprotocols: []string{SubprotocolNDJSON}})
		if err != nil {
			t.Errorf("accept: %v", err)
			close(server)
			return
		}
		server <- &wsConn{ws: ws, raw: hc.conn, cork: hc.cork, cc: hc.cc, ndjson: ws.Subprotocol() == SubprotocolNDJSON, direct: true}
	}))
	t.Cleanup(ts.Close)
	var protos []string
	if ndjson {
		protos = []string{SubprotocolNDJSON}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	client, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(ts.URL, "http"), &websocket.DialOptions{Subprotocols: protos})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := <-server
	if c == nil {
		t.FailNow()
	}
	t.Cleanup(func() {
		_ = client.CloseNow()
		_ = c.CloseNow()
	})
	return c, client
}

type wireFrame struct {
	binary bool
	data   string
}

// readFrames reads n frames from the client side.
func readFrames(t *testing.T, client *websocket.Conn, n int) []wireFrame {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var out []wireFrame
	for range n {
		typ, p, err := client.Read(ctx)
		if err != nil {
			t.Fatalf("read frame %d of %d: %v", len(out)+1, n, err)
		}
		out = append(out, wireFrame{typ == websocket.MessageBinary, string(p)})
	}
	return out
}

func (f wireFrame) String() string {
	if f.binary {
		return fmt.Sprintf("binary %x", f.data)
	}
	return strconv.Quote(f.data)
}

func equalFrames(a, b []wireFrame) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

var mixedBatch = []transport.Message{
	{Data: []byte("t0")},
	{Data: []byte("t1")},
	{Data: []byte{0, 1}, Binary: true},
	{Data: []byte("t2")},
	{Data: []byte("two\nlines")},
	{Data: []byte("t3")},
	{Data: []byte("t4")},
	{Data: []byte("t5")},
	{Data: []byte{2, 3}, Binary: true},
	{Data: []byte{4, 5}, Binary: true},
	{Data: []byte("t6")},
}

// With ndjson, each run of text messages without a newline of their own
// leaves as one frame, one message per line; binary messages and text with
// a newline (the client would split it into broken pieces) stay frames of
// their own, and the order is kept.
func TestWriteJoinsTextMessagesWithNDJSON(t *testing.T) {
	bothFramings(t, testWriteJoinsTextMessagesWithNDJSON)
}

func testWriteJoinsTextMessagesWithNDJSON(t *testing.T, direct bool) {
	c, client := wsPair(t, true)
	c.direct = direct
	if !c.ndjson {
		t.Fatal("ndjson was not negotiated")
	}
	if err := c.Write(mixedBatch, time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	want := []wireFrame{
		{false, "t0\nt1"},
		{true, "\x00\x01"},
		{false, "t2"},
		{false, "two\nlines"},
		{false, "t3\nt4\nt5"},
		{true, "\x02\x03"},
		{true, "\x04\x05"},
		{false, "t6"},
	}
	if got := readFrames(t, client, len(want)); !equalFrames(got, want) {
		t.Fatalf("frames on the wire:\n got %v\nwant %v", got, want)
	}
}

func TestWriteWithoutNDJSONKeepsMessagesApart(t *testing.T) {
	bothFramings(t, testWriteWithoutNDJSONKeepsMessagesApart)
}

// bothFramings runs test with direct framing and through coder/websocket
// (frames.go).
func bothFramings(t *testing.T, test func(t *testing.T, direct bool)) {
	t.Run("direct", func(t *testing.T) { test(t, true) })
	t.Run("coder", func(t *testing.T) { test(t, false) })
}

func testWriteWithoutNDJSONKeepsMessagesApart(t *testing.T, direct bool) {
	c, client := wsPair(t, false)
	c.direct = direct
	if c.ndjson {
		t.Fatal("ndjson negotiated although the client did not ask for it")
	}
	if err := c.Write(mixedBatch, time.Now().Add(5*time.Second)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	var want []wireFrame
	for _, m := range mixedBatch {
		want = append(want, wireFrame{m.Binary, string(m.Data)})
	}
	if got := readFrames(t, client, len(want)); !equalFrames(got, want) {
		t.Fatalf("frames on the wire:\n got %v\nwant %v", got, want)
	}
}

func TestWriteHonoursTheDeadline(t *testing.T) {
	bothFramings(t, testWriteHonoursTheDeadline)
}

func testWriteHonoursTheDeadline(t *testing.T, direct bool) {
	c, _ := wsPair(t, true)
	c.direct = direct
	err := c.Write([]transport.Message{{Data: []byte("late")}}, time.Now().Add(-time.Second))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("Write with a past deadline: got %v, want an error wrapping %v", err, os.ErrDeadlineExceeded)
	}
}

// The deadline of the last batch does not hold up the close frame that
// follows long after it.
func TestCloseAfterAnExpiredBatchDeadline(t *testing.T) {
	c, client := wsPair(t, true)
	if err := c.Write([]transport.Message{{Data: []byte("hello")}}, time.Now().Add(50*time.Millisecond)); err != nil {
		t.Fatalf("Write: %v", err)
	}
	readFrames(t, client, 1)
	time.Sleep(100 * time.Millisecond)

	done := make(chan error, 1)
	go func() { done <- c.Close(4001, "bye") }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, _, err := client.Read(ctx) // answers the close frame
	if code := websocket.CloseStatus(err); code != 4001 {
		t.Fatalf("client read %v, want a close frame with 4001", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Close: %v", err)
	}
}

func TestReadIsNotUsed(t *testing.T) {
	c, _ := wsPair(t, false)
	if _, err := c.Read(context.Background()); !errors.Is(err, errReadUnused) {
		t.Fatalf("Read: got %v, want errReadUnused", err)
	}
}

// A batch sets its deadline on the socket only when a write would wait
// (corkWriter.send). A client that stops reading must still fail the batch
// that fills its socket, by the deadline; and once it reads again, a later
// batch is not failed by the deadline the stuck one set.
func TestWriteToAClientThatStopsReadingFailsByTheDeadline(t *testing.T) {
	bothFramings(t, testWriteToAClientThatStopsReading)
}

func testWriteToAClientThatStopsReading(t *testing.T, direct bool) {
	c, _ := wsPair(t, false)
	c.direct = direct
	if c.cork.raw == nil {
		t.Fatal("no raw writer on a TCP connection: batches would not defer their deadline")
	}
	big := []transport.Message{{Data: bytes.Repeat([]byte("x"), 256<<10)}}
	var err error
	start := time.Now()
	for i := 0; i < 200 && err == nil; i++ {
		err = c.Write(big, time.Now().Add(200*time.Millisecond))
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("writes to a client that does not read: got %v, want an error wrapping %v", err, os.ErrDeadlineExceeded)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("the stuck write took %v", d)
	}
}

func TestDeadlineOfAStuckBatchIsCleared(t *testing.T) {
	c, client := wsPair(t, false)
	// Fill the socket while the client reads nothing, so that the batch
	// sets its deadline on the socket, then let the client read.
	big := []transport.Message{{Data: bytes.Repeat([]byte("y"), 8<<20)}}
	done := make(chan error, 1)
	go func() { done <- c.Write(big, time.Now().Add(time.Second)) }()
	time.Sleep(300 * time.Millisecond)
	client.SetReadLimit(-1)
	go func() {
		for {
			if _, _, err := client.Read(context.Background()); err != nil {
				return
			}
		}
	}()
	if err := <-done; err != nil {
		t.Fatalf("the batch the client read within its deadline: %v", err)
	}
	// Past that deadline, what coder/websocket writes by itself, outside
	// a batch (pings, pongs, here a message), must not find it still set.
	time.Sleep(time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.ws.Write(ctx, websocket.MessageText, []byte("after")); err != nil {
		t.Fatalf("a write after a batch that waited for its client: %v", err)
	}
}
