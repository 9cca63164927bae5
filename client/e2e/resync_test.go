package e2e

import (
	"context"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

// resyncFor is how long TestSlowReaderResyncs publishes: 30 s, the
// scenario the guarantee is stated for (a shorter -resync.for still forces
// dozens of resyncs, for quick runs while working on it).
var resyncFor = flag.Duration("resync.for", 30*time.Second, "how long the slow-reader resync test publishes")

// throttledConn reads at most rate bytes a second (0: unthrottled) from
// its connection, in small reads, as a client on a slow link does.
type throttledConn struct {
	net.Conn
	rate *atomic.Int64
}

func (c *throttledConn) Read(p []byte) (int, error) {
	rate := c.rate.Load()
	if rate > 0 && int64(len(p)) > rate/20 {
		p = p[:rate/20]
	}
	n, err := c.Conn.Read(p)
	if rate > 0 && n > 0 {
		time.Sleep(time.Duration(n) * time.Second / time.Duration(rate))
	}
	return n, err
}

// throttledTransport dials WebSockets whose reading is throttled to rate,
// over a TCP connection with a small receive buffer (so that the kernel
// does not take in megabytes on the reader's behalf).
func throttledTransport(rate *atomic.Int64) client.Transport {
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(8 << 10)
		}
		return &throttledConn{Conn: c, rate: rate}, nil
	}
	return &client.WebSocket{HTTPClient: &http.Client{Transport: &http.Transport{DialContext: dial, DisableKeepAlives: true}}}
}

// smallSendBufferListener caps the kernel send buffer of each accepted
// connection: the server's own queue, not the kernel, then holds what a
// slow reader has not taken.
type smallSendBufferListener struct{ net.Listener }

func (l smallSendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(16 << 10)
	}
	return c, err
}

// seqLog records the sequence numbers a room delivered.
type seqLog struct {
	mu   sync.Mutex
	seqs []uint64
	recs []client.Recover
}

func (l *seqLog) watch(r *client.Room) {
	r.OnMessage(func(m client.Message) {
		l.mu.Lock()
		l.seqs = append(l.seqs, m.Seq)
		l.mu.Unlock()
	})
	r.OnRecover(func(rc client.Recover) {
		l.mu.Lock()
		l.recs = append(l.recs, rc)
		l.mu.Unlock()
	})
}

func (l *seqLog) last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.seqs) == 0 {
		return 0
	}
	return l.seqs[len(l.seqs)-1]
}

// check fails unless the log holds from+1 … to, each once, in order.
func (l *seqLog) check(t *testing.T, who string, from, to uint64) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if uint64(len(l.seqs)) != to-from {
		t.Errorf("%s: %d messages, want %d (seqs %d to %d)", who, len(l.seqs), to-from, from+1, to)
	}
	for i, s := range l.seqs {
		if s != from+1+uint64(i) {
			t.Fatalf("%s: message %d has seq %d, want %d: a gap, a repeat or a reordering", who, i, s, from+1+uint64(i))
		}
	}
}

// gauge reads a metric of the server's collector.
func gauge(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Error(err)
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) > 0 {
			m := mf.GetMetric()[0]
			if m.GetGauge() != nil {
				return m.GetGauge().GetValue()
			}
			return m.GetCounter().GetValue()
		}
	}
	return 0
}

// slowRig is a room-protocol server with small socket buffers, a member
// whose reading is throttled (slow), and two that read (publisher, other).
type slowRig struct {
	srv      *troupe.Server
	reg      *prometheus.Registry
	throttle atomic.Int64
	status   *statuses // the slow member's
	logs     map[string]*seqLog
	pub      *client.Client
}

const (
	slowRoom = "ticker"
	slowRate = 10 << 10 // bytes a second
)

func newSlowRig(t *testing.T, cfg troupe.Config) *slowRig {
	t.Helper()
	cfg.RoomProtocol = true
	cfg.Settings.RateLimit = -1
	srv, err := troupe.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	g := &slowRig{srv: srv, reg: prometheus.NewRegistry(), status: newStatuses()}
	g.reg.MustRegister(srv.Metrics())
	ts := httptest.NewUnstartedServer(srv)
	ts.Listener = smallSendBufferListener{ts.Listener}
	ts.Start()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		_ = srv.Shutdown(ctx)
		ts.Close()
	})
	url := "ws" + strings.TrimPrefix(ts.URL, "http")
	g.throttle.Store(slowRate)
	slow := dial(t, []string{url}, &client.Options{Transport: throttledTransport(&g.throttle), OnStatus: g.status.add})
	g.pub = dial(t, []string{url}, nil)
	other := dial(t, []string{url}, nil)
	g.logs = map[string]*seqLog{"slow": {}, "publisher": {}, "other": {}}
	rooms := map[string]*client.Room{"slow": slow.Room(slowRoom), "publisher": g.pub.Room(slowRoom), "other": other.Room(slowRoom)}
	for name, r := range rooms {
		g.logs[name].watch(r)
		if _, err := r.Join(ctxT(t), map[string]string{"name": name}); err != nil {
			t.Fatalf("%s: join: %v", name, err)
		}
	}
	return g
}

// publish publishes total messages at rate a second, at an even pace, and
// returns the longest outbound queue of any session seen meanwhile. The
// publishes are not acknowledged: nothing the publisher does waits on the
// room.
func (g *slowRig) publish(t *testing.T, total, rate int) (maxQueue float64) {
	const tick = 10 * time.Millisecond
	perTick := max(1, rate*int(tick)/int(time.Second))
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			maxQueue = max(maxQueue, gauge(t, g.reg, "troupe_outbound_queue_max"))
		}
	}()
	ticker := time.NewTicker(tick)
	for sent := 0; sent < total; {
		<-ticker.C
		for i := 0; i < perTick && sent < total; i++ {
			if err := g.pub.Send(ctxT(t), "room.publish", map[string]any{"room": slowRoom, "body": sent}); err != nil {
				t.Fatal(err)
			}
			sent++
		}
	}
	ticker.Stop()
	close(stop)
	<-sampled
	return maxQueue
}

// waitLast waits until the member's last seq is at least seq.
func (g *slowRig) waitLast(t *testing.T, name string, seq uint64, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for g.logs[name].last() < seq && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
}

// TestSlowReaderResyncs checks resync instead of cut-off: a member whose
// socket reads 10 KB/s, in a room publishing 2,000 messages a second, is
// never disconnected: the server drops what it cannot take and sends it
// room.resync (many times), the client catches up from the history by
// itself, and once its link is fast again it holds every message exactly
// once, in order. The members that read lose nothing, and the server
// never holds more for the slow member than its queue limit.
func TestSlowReaderResyncs(t *testing.T) {
	const (
		rate  = 2000 // messages a second
		queue = 256
	)
	total := int(resyncFor.Seconds() * rate)
	g := newSlowRig(t, troupe.Config{
		HistoryMessages: total + 1000,
		HistoryBytes:    total * 200,
		Settings: troupe.Settings{
			MaxQueuedMessages: queue,
			MaxLag:            *resyncFor + time.Minute,
		},
	})
	start := time.Now()
	maxQueue := g.publish(t, total, rate)
	published := time.Since(start)

	// Every message is in: the members that read have them all.
	g.waitLast(t, "publisher", uint64(total), wait+*resyncFor)
	g.waitLast(t, "other", uint64(total), wait)
	resyncs := gauge(t, g.reg, "troupe_resyncs_total")
	slow := g.logs["slow"]
	slow.mu.Lock()
	slowGot := len(slow.seqs)
	slow.mu.Unlock()
	// The link recovers: the slow member catches up from the history (a
	// page at a time over small socket buffers, so at some thousands of
	// messages a second).
	g.throttle.Store(0)
	g.waitLast(t, "slow", uint64(total), wait+2**resyncFor)

	for name, l := range g.logs {
		l.check(t, name, 0, uint64(total))
	}
	if n := gauge(t, g.reg, "troupe_slow_consumers_total"); n != 0 {
		t.Errorf("%v members closed as slow consumers, want none", n)
	}
	g.status.mu.Lock()
	for _, st := range g.status.all {
		if st.State != client.Connected || st.Reconnected {
			t.Errorf("slow member's connection changed: %+v", st)
		}
	}
	g.status.mu.Unlock()
	if resyncs < 2 {
		t.Errorf("%v resyncs while the member was slow, want many", resyncs)
	}
	// The documented bound: at most MaxQueuedMessages frames, plus one
	// room.resync per room that lost frames (one room here).
	if maxQueue > queue+1 {
		t.Errorf("a session held %v frames, over the bound of %d", maxQueue, queue+1)
	}
	slow.mu.Lock()
	for _, rc := range slow.recs {
		if !rc.Recovered {
			t.Errorf("slow member told %+v: the history held the whole gap", rc)
		}
	}
	recs := len(slow.recs)
	slow.mu.Unlock()
	t.Logf("%d messages in %v; the slow member got %d while slow, was resynced %v times, caught up %d times; longest queue %v",
		total, published.Round(time.Millisecond), slowGot, resyncs, recs, maxQueue)
}

// TestResyncBeyondHistory checks that a gap the history no longer holds is
// reported as not recovered, as a resume's is, and that the messages after
// it still come once each, in order, without a disconnect.
func TestResyncBeyondHistory(t *testing.T) {
	const total = 2000
	g := newSlowRig(t, troupe.Config{
		HistoryMessages: 100,
		Settings:        troupe.Settings{MaxQueuedMessages: 64},
	})
	g.publish(t, total, 2000)
	g.waitLast(t, "other", total, wait)
	g.throttle.Store(0)
	g.waitLast(t, "slow", total, wait)

	slow := g.logs["slow"]
	// The catch-up reports its end (OnRecover) after it has delivered the
	// last message: wait for the report of the lost gap.
	deadline := time.Now().Add(wait)
	for {
		slow.mu.Lock()
		lost := false
		for _, rc := range slow.recs {
			lost = lost || !rc.Recovered
		}
		slow.mu.Unlock()
		if lost || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	slow.mu.Lock()
	defer slow.mu.Unlock()
	for i := 1; i < len(slow.seqs); i++ {
		if slow.seqs[i] <= slow.seqs[i-1] {
			t.Fatalf("seq %d after %d: a repeat or a reordering", slow.seqs[i], slow.seqs[i-1])
		}
	}
	if n := len(slow.seqs); n == 0 || slow.seqs[n-1] != total || n == total {
		t.Fatalf("slow member got %d messages ending at %v, want fewer than %d ending at %d", n, slow.seqs[max(0, n-1):], total, total)
	}
	lost := false
	for _, rc := range slow.recs {
		lost = lost || !rc.Recovered
	}
	if !lost {
		t.Errorf("slow member was never told of a gap not recovered (told %+v)", slow.recs)
	}
	g.status.mu.Lock()
	defer g.status.mu.Unlock()
	if len(g.status.all) != 1 {
		t.Errorf("slow member's connection changed: %+v", g.status.all)
	}
}

// TestMaxLagCloses checks the bound on a member that stays behind: one
// whose queue keeps overflowing for longer than MaxLag is closed with
// 1013, as under the close policy, and counted as a slow consumer.
func TestMaxLagCloses(t *testing.T) {
	g := newSlowRig(t, troupe.Config{Settings: troupe.Settings{MaxQueuedMessages: 64, MaxLag: 500 * time.Millisecond}})
	g.publish(t, 4000, 2000)
	// The server closes the member once it has lagged for MaxLag; the
	// client sees that after reading what its socket still holds, which at
	// 10 KB/s can take longer than the test waits: once the server has
	// closed it, the link is let go at full speed.
	deadline := time.Now().Add(wait)
	for gauge(t, g.reg, "troupe_slow_consumers_total") < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the server never closed the slow member")
		}
		time.Sleep(20 * time.Millisecond)
	}
	g.throttle.Store(0)
	st := g.status.waitFor(t, 0, "the slow member to be closed", func(s client.Status) bool { return s.State == client.Disconnected })
	if st.Err == nil || !strings.Contains(st.Err.Error(), "StatusTryAgainLater") {
		t.Errorf("slow member disconnected with %v, want close 1013", st.Err)
	}
	if n := gauge(t, g.reg, "troupe_slow_consumers_total"); n < 1 {
		t.Errorf("troupe_slow_consumers_total %v, want at least 1", n)
	}
}
