package nats

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/troupehq/troupe/rooms"
)

// wait bounds a wait that would otherwise hang; it is no timing assertion.
const wait = 15 * time.Second

func testLogger() *slog.Logger {
	if os.Getenv("NATSBP_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// openSolo starts a backplane with its own in-process server, closed at
// the end of the test.
func openSolo(t testing.TB, mod func(*Options)) *Backplane {
	t.Helper()
	opts := Options{
		Embedded: &ServerOptions{Name: "a", NoListen: true, StoreDir: t.TempDir()},
		Memory:   true,
		Logger:   testLogger(),
	}
	if mod != nil {
		mod(&opts)
	}
	return mustOpen(t, opts)
}

// openPeer opens a second node on the server of another, as a second
// application node would connect to the same cluster.
func openPeer(t testing.TB, srv *server.Server, node string, mod func(*Options)) *Backplane {
	t.Helper()
	opts := Options{Server: srv, Node: node, Memory: true, Logger: testLogger()}
	if mod != nil {
		mod(&opts)
	}
	return mustOpen(t, opts)
}

func mustOpen(t testing.TB, opts Options) *Backplane {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	b, err := Open(ctx, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := b.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}

func payload(seq uint64) []byte { return fmt.Appendf(nil, "msg %d", seq) }

func publishN(t testing.TB, b *Backplane, room string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for range n {
		seq, err := b.Publish(ctxT(t), room, 1, single(payload))
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
		seqs = append(seqs, seq)
	}
	return seqs
}

// collector gathers what a feed delivers.
type collector struct {
	mu      sync.Mutex
	entries []rooms.Entry
	signal  chan struct{}
}

func newCollector() *collector { return &collector{signal: make(chan struct{}, 1)} }

func (c *collector) deliver(e rooms.Entry) {
	c.mu.Lock()
	c.entries = append(c.entries, e)
	c.mu.Unlock()
	select {
	case c.signal <- struct{}{}:
	default:
	}
}

// waitFor waits until n entries arrived and returns them.
func (c *collector) waitFor(t testing.TB, n int) []rooms.Entry {
	t.Helper()
	deadline := time.After(wait)
	for {
		c.mu.Lock()
		got := append([]rooms.Entry(nil), c.entries...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.signal:
		case <-deadline:
			t.Fatalf("feed delivered %d entries, want %d", len(got), n)
		}
	}
}

func follow(t testing.TB, b *Backplane, room string) (*rooms.Feed, *collector) {
	t.Helper()
	c := newCollector()
	feed, err := b.Follow(ctxT(t), room, c.deliver)
	if err != nil {
		t.Fatalf("Follow: %v", err)
	}
	t.Cleanup(feed.Stop)
	return feed, c
}

// checkSeqs fails unless entries are numbered from..from+len-1 in order.
func checkSeqs(t testing.TB, entries []rooms.Entry, from uint64) {
	t.Helper()
	for i, e := range entries {
		if e.Seq != from+uint64(i) {
			t.Fatalf("entry %d has seq %d, want %d (entries %v)", i, e.Seq, from+uint64(i), seqsOf(entries))
		}
	}
}

func seqsOf(entries []rooms.Entry) []uint64 {
	out := make([]uint64, len(entries))
	for i, e := range entries {
		out[i] = e.Seq
	}
	return out
}

// freePorts returns n ports that were free on 127.0.0.1 a moment ago.
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var ls []net.Listener
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}

// single makes a one-message batch of build.
func single(build func(seq uint64) []byte) func(first uint64) [][]byte {
	return func(first uint64) [][]byte { return [][]byte{build(first)} }
}
