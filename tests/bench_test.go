package tests

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe"
)

// Loopback benchmarks: a troupe.Server behind httptest on 127.0.0.1 and real
// coder/websocket clients in the same process, so they measure the whole
// path (room actor, session actors, writers, coder/websocket framing and the
// kernel's loopback) but share the machine's cores with the clients. The
// figures to compare against other servers come from the load generator
// (see BENCHMARKS.md); these are for spotting regressions.

// benchServer is a troupe.Server on httptest, started for a benchmark.
type benchServer struct {
	srv *troupe.Server
	ts  *httptest.Server
	url string
}

func startBenchServer(b *testing.B, cfg troupe.Config) *benchServer {
	b.Helper()
	// Benchmark clients send far above the default rate limit.
	cfg.Settings.RateLimit = -1
	srv, err := troupe.New(cfg)
	if err != nil {
		b.Fatalf("troupe.New: %v", err)
	}
	ts := httptest.NewServer(srv)
	return &benchServer{srv: srv, ts: ts, url: "ws" + strings.TrimPrefix(ts.URL, "http")}
}

// stop closes the server; clients must be closed first so their read loops
// end on a close rather than on a reset.
func (s *benchServer) stop() {
	_ = s.srv.Close()
	s.ts.Close()
}

func (s *benchServer) dial(b *testing.B, subprotocols ...string) *websocket.Conn {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, s.url, &websocket.DialOptions{HTTPClient: s.ts.Client(), Subprotocols: subprotocols})
	if err != nil {
		b.Fatalf("dial: %v", err)
	}
	ws.SetReadLimit(64 << 20)
	return ws
}

// benchWrite sends one text frame, bounded by waitTimeout.
func benchWrite(ws *websocket.Conn, p []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	return ws.Write(ctx, websocket.MessageText, p)
}

// benchRead reads one text frame into buf (reused across calls, so the
// client costs the process as little as it can), bounded by waitTimeout.
func benchRead(ws *websocket.Conn, buf *bytes.Buffer) error {
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	_, r, err := ws.Reader(ctx)
	if err != nil {
		return err
	}
	buf.Reset()
	_, err = buf.ReadFrom(r)
	return err
}

// fanoutMember is one loopback client of BenchmarkFanoutLoopback: it reads
// continuously and counts the messages it got (several per frame under
// ndjson).
type fanoutMember struct {
	ws       *websocket.Conn
	got      atomic.Int64
	bad      atomic.Int64 // frames that were not the broadcast
	done     chan struct{}
	readErr  error
	progress chan<- struct{}
}

func (m *fanoutMember) read(want []byte) {
	defer close(m.done)
	var buf bytes.Buffer
	for {
		_, r, err := m.ws.Reader(context.Background())
		if err == nil {
			buf.Reset()
			_, err = buf.ReadFrom(r)
		}
		if err != nil {
			m.readErr = err
			return
		}
		n := int64(0)
		for line := range bytes.SplitSeq(buf.Bytes(), []byte{'\n'}) {
			if !bytes.Equal(line, want) {
				m.bad.Add(1)
			}
			n++
		}
		m.got.Add(n)
		select {
		case m.progress <- struct{}{}:
		default:
		}
	}
}

// BenchmarkFanoutLoopback broadcasts to one room of 100 members, each a
// coder/websocket client on loopback that reads continuously. One op is one
// Server.Broadcast delivered to every member; deliveries/s counts the copies
// received. The publisher keeps at most fanoutWindow broadcasts ahead of the
// slowest member, like wsload's -ack all, so the figure is a sustainable
// rate and no member is ever dropped as a slow consumer.
func BenchmarkFanoutLoopback(b *testing.B) {
	for _, mode := range []struct {
		name  string
		proto []string
	}{{"frames", nil}, {"ndjson", []string{"ndjson"}}} {
		b.Run(mode.name, func(b *testing.B) { benchFanout(b, 100, mode.proto) })
	}
}

// fanoutWindow is how many broadcasts the publisher may be ahead of the
// slowest member: well under the session's default queue bound (1024
// messages), so a member that merely lags is never closed.
const fanoutWindow = 128

func benchFanout(b *testing.B, members int, proto []string) {
	h := startBenchServer(b, troupe.Config{})
	defer h.stop()
	registerJoin(h.srv)

	// A 128-byte body, as in the load generator's fan-out scenario. It is
	// passed pre-encoded: one Broadcast still encodes its envelope once,
	// and the encoder has a benchmark of its own.
	payload := json.RawMessage(`"` + strings.Repeat("x", 128) + `"`)
	want := []byte(`{"type":"bench","payload":` + string(payload) + `}`)

	progress := make(chan struct{}, 1)
	ms := make([]*fanoutMember, members)
	var wg sync.WaitGroup
	defer func() {
		for _, m := range ms {
			if m != nil {
				_ = m.ws.CloseNow()
			}
		}
		wg.Wait()
	}()
	var buf bytes.Buffer
	for i := range ms {
		ws := h.dial(b, proto...)
		m := &fanoutMember{ws: ws, done: make(chan struct{}), progress: progress}
		ms[i] = m
		if err := benchWrite(ws, []byte(`{"type":"join","payload":{"room":"fan"}}`)); err != nil {
			b.Fatalf("join: %v", err)
		}
		if err := benchRead(ws, &buf); err != nil || !bytes.Contains(buf.Bytes(), []byte(`"joined"`)) {
			b.Fatalf("join reply %q: %v", buf.Bytes(), err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); m.read(want) }()
	}

	// floor is what the slowest member has received; it is recomputed only
	// when the window is used up.
	floor := func() int64 {
		lo := ms[0].got.Load()
		for _, m := range ms[1:] {
			lo = min(lo, m.got.Load())
		}
		return lo
	}
	waitFloor := func(n int64) {
		deadline := time.NewTimer(waitTimeout)
		defer deadline.Stop()
		for floor() < n {
			select {
			case <-progress:
			case <-deadline.C:
				b.Fatalf("slowest member has %d of %d broadcasts after %v", floor(), n, waitTimeout)
			}
		}
	}

	b.ReportAllocs()
	b.ResetTimer()
	seen := int64(0)
	for i := int64(0); i < int64(b.N); i++ {
		if i-seen >= fanoutWindow {
			waitFloor(i - fanoutWindow/2)
			seen = floor()
		}
		if err := h.srv.Broadcast("fan", "bench", payload); err != nil {
			b.Fatalf("broadcast: %v", err)
		}
	}
	waitFloor(int64(b.N))
	b.StopTimer()
	b.ReportMetric(float64(b.N)*float64(members)/b.Elapsed().Seconds(), "deliveries/s")

	for i, m := range ms {
		if got := m.got.Load(); got != int64(b.N) {
			b.Fatalf("member %d got %d messages, want %d", i, got, b.N)
		}
		if bad := m.bad.Load(); bad != 0 {
			b.Fatalf("member %d got %d messages that were not the broadcast", i, bad)
		}
		select {
		case <-m.done:
			b.Fatalf("member %d stopped reading: %v", i, m.readErr)
		default:
		}
	}
}

// BenchmarkEchoLoopback measures request/reply round trips of one
// coder/websocket client on loopback against a typed handler that replies
// with the request's payload. "sequential" waits for every reply before the
// next request (one op = one round trip); "window=8" keeps eight requests
// in flight, as wsload's echo scenario does.
func BenchmarkEchoLoopback(b *testing.B) {
	for _, window := range []int{1, 8} {
		name := "sequential"
		if window > 1 {
			name = fmt.Sprintf("window=%d", window)
		}
		b.Run(name, func(b *testing.B) { benchEcho(b, window) })
	}
}

func benchEcho(b *testing.B, window int) {
	h := startBenchServer(b, troupe.Config{})
	defer h.stop()
	troupe.Handle(h.srv, "echo", func(c *troupe.Context, _ json.RawMessage) error {
		return c.Reply("echo", c.Payload())
	})
	ws := h.dial(b)
	defer func() { _ = ws.CloseNow() }()

	body := `"` + strings.Repeat("x", 64) + `"`
	req := []byte(`{"type":"echo","payload":` + body + `}`)
	want := []byte(`{"type":"echo","payload":` + body + `}`)
	var buf bytes.Buffer
	receive := func() {
		if err := benchRead(ws, &buf); err != nil {
			b.Fatalf("read: %v", err)
		}
		if !bytes.Equal(buf.Bytes(), want) {
			b.Fatalf("reply %q, want %q", buf.Bytes(), want)
		}
	}

	b.ReportAllocs()
	b.ResetTimer()
	inflight := 0
	for i := 0; i < b.N; i++ {
		if inflight == window {
			receive()
			inflight--
		}
		if err := benchWrite(ws, req); err != nil {
			b.Fatalf("write: %v", err)
		}
		inflight++
	}
	for ; inflight > 0; inflight-- {
		receive()
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
}

// BenchmarkRoomRequestLoopback compares a request answered by a room's
// logic (HandleRoom: decoded on the session, handled in the room actor,
// answered from there) with the same request answered by a plain handler
// (HandleRequest, on the session's own worker), sequential round trips of
// one client: what routing through the room costs.
func BenchmarkRoomRequestLoopback(b *testing.B) {
	for _, via := range []string{"handler", "room"} {
		b.Run(via, func(b *testing.B) {
			h := startBenchServer(b, troupe.Config{
				RoomProtocol:   true,
				NewRoomHandler: func(string) troupe.RoomHandler { return &tally{} },
			})
			defer h.stop()
			var n int
			troupe.HandleRequest(h.srv, "add", func(_ *troupe.Context, m tallyMsg) (tallyResult, error) {
				n += m.N
				return tallyResult{Count: n}, nil
			})
			if via == "room" {
				troupe.HandleRoom(h.srv, "add", (*tally).add)
			}
			ws := h.dial(b)
			defer func() { _ = ws.CloseNow() }()
			var buf bytes.Buffer
			if err := benchWrite(ws, []byte(`{"type":"room.join","id":0,"payload":{"room":"r"}}`)); err != nil {
				b.Fatal(err)
			}
			if err := benchRead(ws, &buf); err != nil || !bytes.Contains(buf.Bytes(), []byte("room.joined")) {
				b.Fatalf("join: %s, %v", buf.Bytes(), err)
			}
			req := []byte(`{"type":"add","id":1,"room":"r","payload":{"room":"r","n":1}}`)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				if err := benchWrite(ws, req); err != nil {
					b.Fatal(err)
				}
				if err := benchRead(ws, &buf); err != nil || !bytes.HasPrefix(buf.Bytes(), []byte(`{"type":"reply"`)) {
					b.Fatalf("answer %s, %v", buf.Bytes(), err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "roundtrips/s")
		})
	}
}
