package serve

import (
	"bufio"
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

// BenchmarkReadSmallMessages measures what the server spends per message
// read, from the socket to OnFrame: a client writes masked frames of 64
// bytes, 64 per write, and the benchmark ends when OnFrame has seen b.N.
// "direct" is the read loop as built (direct.go); "coder" reads every
// message through coder/websocket's Reader, as before direct reading.
func BenchmarkReadSmallMessages(b *testing.B) {
	for _, m := range []struct {
		name   string
		direct bool
	}{{"direct", true}, {"coder", false}} {
		b.Run(m.name, func(b *testing.B) {
			defer func(old bool) { directReading = old }(directReading)
			directReading = m.direct
			benchRead(b)
		})
	}
}

func benchRead(b *testing.B) {
	var seen atomic.Int64
	done := make(chan struct{})
	want := int64(b.N)
	h := benchHandler(b, Hooks{OnFrame: func(*session.Session, bool, []byte) {
		if seen.Add(1) == want {
			close(done)
		}
	}})
	ts := httptest.NewServer(h)
	defer ts.Close()

	nc, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write(upgradeRequest("")); err != nil {
		b.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		b.Fatalf("upgrade: %v %v", resp, err)
	}
	msg := maskedFrame(0x81, fmt.Appendf(nil, `{"type":"bench.echo","payload":%q}`, bytes.Repeat([]byte("x"), 28)))
	const perWrite = 64
	batch := bytes.Repeat(msg, perWrite)

	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += perWrite {
		out := batch
		if n := b.N - sent; n < perWrite {
			out = batch[:n*len(msg)]
		}
		if _, err := nc.Write(out); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("OnFrame saw %d of %d messages", seen.Load(), want)
	}
}

// benchHandler is a handler for benchmarks: no pings, no rate limit, no
// logs; it closes when b ends.
func benchHandler(b *testing.B, hooks Hooks) *Handler {
	sys := session.NewSystem(nil)
	h, err := NewHandler(sys, Config{
		Limits: Limits{PingInterval: -1, RateLimit: -1},
		Logger: slog.New(slog.DiscardHandler),
	}, hooks)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		h.Close()
		sys.Shutdown()
	})
	return h
}
