package tests

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/troupehq/troupe"
)

// The Prometheus collector, read the way a monitoring system reads it:
// registered in a registry of its own and gathered, each value checked
// after something a user would expect it to count.

// samples are one scrape: every series by name and labels, as in the text
// format (`troupe_closes_total{code="1000"}`); histograms contribute their
// _count, _sum and _bucket series.
type samples map[string]float64

// scrape gathers reg and flattens the result.
func scrape(t *testing.T, reg *prometheus.Registry) samples {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := samples{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, l := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := func(suffix string, extra ...string) string {
				all := append(slices.Clone(labels), extra...)
				sort.Strings(all)
				if len(all) == 0 {
					return mf.GetName() + suffix
				}
				return mf.GetName() + suffix + "{" + strings.Join(all, ",") + "}"
			}
			switch {
			case m.GetCounter() != nil:
				out[key("")] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				out[key("")] = m.GetGauge().GetValue()
			case m.GetHistogram() != nil:
				hg := m.GetHistogram()
				out[key("_count")] = float64(hg.GetSampleCount())
				out[key("_sum")] = hg.GetSampleSum()
				for _, b := range hg.GetBucket() {
					out[key("_bucket", fmt.Sprintf("le=%q", fmt.Sprint(b.GetUpperBound())))] = float64(b.GetCumulativeCount())
				}
			}
		}
	}
	return out
}

// value returns one series, failing the test if the scrape lacks it.
func (s samples) value(t *testing.T, series string) float64 {
	t.Helper()
	v, ok := s[series]
	if !ok {
		t.Fatalf("no series %s in the scrape; have %v", series, s.names())
	}
	return v
}

func (s samples) names() []string {
	out := make([]string, 0, len(s))
	for k := range s {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// expect checks that series has the value want.
func (s samples) expect(t *testing.T, series string, want float64) {
	t.Helper()
	if got := s.value(t, series); got != want {
		t.Errorf("%s = %v, want %v", series, got, want)
	}
}

// metricsServer starts a test server and registers its collector in a
// registry of its own, as an application would.
func metricsServer(t *testing.T, cfg troupe.Config, opts ...serverOption) (*testServer, *prometheus.Registry) {
	t.Helper()
	h := startServer(t, cfg, opts...)
	reg := prometheus.NewRegistry()
	if err := reg.Register(h.srv.Metrics()); err != nil {
		t.Fatalf("register the collector: %v", err)
	}
	return h, reg
}

// eventuallyValue waits for series to reach want, for the counters that are
// updated just after the event a client can see (a message is counted as
// sent once its write returned, which the client may see first).
func eventuallyValue(t *testing.T, reg *prometheus.Registry, series string, want float64) {
	t.Helper()
	var got float64
	deadline := time.Now().Add(waitTimeout)
	for {
		s := scrape(t, reg)
		var ok bool
		if got, ok = s[series]; ok && got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v (present: %v), want %v", series, got, ok, want)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// TestMetricsConnectionsAndMessages checks the counters of the ordinary
// life of a server: connections active and total, messages and bytes in
// both directions, handler latency by type, errors by code and closes by
// code.
func TestMetricsConnectionsAndMessages(t *testing.T) {
	h, reg := metricsServer(t, troupe.Config{})
	troupe.Handle(h.srv, "echo", func(c *troupe.Context, m echoMsg) error {
		return c.Reply("echoed", m)
	})

	s := scrape(t, reg)
	s.expect(t, `troupe_connections_active{transport="websocket"}`, 0)
	s.expect(t, `troupe_connections_total{transport="websocket"}`, 0)
	s.expect(t, "troupe_messages_received_total", 0)
	s.expect(t, "troupe_messages_sent_total", 0)
	s.expect(t, "troupe_rooms_active", 0)

	var clients []*client
	for i := range 3 {
		name := fmt.Sprintf("c%d", i)
		c := h.dial(t, name)
		c.startReading()
		h.rec.session(t, name)
		clients = append(clients, c)
	}
	s = scrape(t, reg)
	s.expect(t, `troupe_connections_active{transport="websocket"}`, 3)
	s.expect(t, `troupe_connections_total{transport="websocket"}`, 3)

	// A known exchange: five echoes and one message of a type nobody
	// handles, from one client.
	c := clients[0]
	inBytes, outBytes := 0, 0
	for i := range 5 {
		msg := mustEnvelope(t, "echo", echoMsg{Text: strings.Repeat("x", i*10)}, nil)
		inBytes += len(msg)
		c.write(t, msg)
		f := c.next(t)
		if e := decodeEnvelope(t, f); e.Type != "echoed" {
			t.Fatalf("echo answered %s %s", e.Type, e.Payload)
		}
		outBytes += len(f)
	}
	unknown := mustEnvelope(t, "no.such.type", map[string]int{"a": 1}, nil)
	inBytes += len(unknown)
	c.write(t, unknown)
	f := c.next(t)
	expectError(t, "unknown type", decodeEnvelope(t, f), "unknown_type")
	outBytes += len(f)

	s = scrape(t, reg)
	s.expect(t, "troupe_messages_received_total", 6)
	s.expect(t, "troupe_received_bytes_total", float64(inBytes))
	s.expect(t, `troupe_errors_total{code="unknown_type"}`, 1)
	// The unknown message was handled after the echoes, so all six are
	// timed by now.
	s.expect(t, `troupe_handler_duration_seconds_count{type="echo"}`, 5)
	s.expect(t, `troupe_handler_duration_seconds_count{type="unknown"}`, 1)
	if sum := s.value(t, `troupe_handler_duration_seconds_sum{type="echo"}`); sum <= 0 {
		t.Errorf("echo handler time sums to %v, want > 0", sum)
	}
	eventuallyValue(t, reg, "troupe_messages_sent_total", 6)
	eventuallyValue(t, reg, "troupe_sent_bytes_total", float64(outBytes))

	// One client leaves normally.
	gone := h.rec.session(t, "c2")
	if err := clients[2].ws.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close c2: %v", err)
	}
	h.rec.waitClose(t, gone)
	s = scrape(t, reg)
	s.expect(t, `troupe_connections_active{transport="websocket"}`, 2)
	s.expect(t, `troupe_connections_total{transport="websocket"}`, 3)
	eventuallyValue(t, reg, `troupe_closes_total{code="1000"}`, 1)
	s = scrape(t, reg)
	for _, name := range s.names() {
		if strings.HasPrefix(name, "troupe_closes_total{") && name != `troupe_closes_total{code="1000"}` {
			t.Errorf("%s = %v after one normal close", name, s[name])
		}
	}
}

// TestMetricsRateLimited checks that every message refused by the rate
// limit is counted, as received and as rate limited.
func TestMetricsRateLimited(t *testing.T) {
	const burst = 5
	h, reg := metricsServer(t, troupe.Config{Settings: troupe.Settings{RateLimit: 1, RateBurst: burst}})
	troupe.Handle(h.srv, "count", func(c *troupe.Context, m rateMsg) error { return c.Reply("counted", m) })
	c := h.dial(t, "c")
	c.startReading()

	handled, limited := sendCounts(t, c, 0, burst+3)
	if limited == 0 {
		t.Fatalf("no message refused out of %d at once with a burst of %d", burst+3, burst)
	}
	s := scrape(t, reg)
	s.expect(t, "troupe_rate_limited_total", float64(limited))
	s.expect(t, "troupe_messages_received_total", float64(burst+3))
	s.expect(t, `troupe_handler_duration_seconds_count{type="count"}`, float64(len(handled)))
}

// TestMetricsErrorsCountRateLimitedAnswers checks that troupe_errors_total,
// documented as the error envelopes sent to clients by code, counts the
// "rate_limited" answers like every other error envelope, so that one
// query over it shows what clients are being told.
func TestMetricsErrorsCountRateLimitedAnswers(t *testing.T) {
	const burst = 5
	h, reg := metricsServer(t, troupe.Config{Settings: troupe.Settings{RateLimit: 1, RateBurst: burst}})
	troupe.Handle(h.srv, "count", func(c *troupe.Context, m rateMsg) error { return c.Reply("counted", m) })
	c := h.dial(t, "c")
	c.startReading()
	_, limited := sendCounts(t, c, 0, burst+3)
	if limited == 0 {
		t.Fatalf("no message refused out of %d at once with a burst of %d", burst+3, burst)
	}
	scrape(t, reg).expect(t, `troupe_errors_total{code="rate_limited"}`, float64(limited))
}

// TestMetricsRooms checks rooms_active and the room_members histogram
// (one observation per room, its member count) as rooms fill and empty.
func TestMetricsRooms(t *testing.T) {
	h, reg := metricsServer(t, troupe.Config{})
	registerJoin(h.srv)
	a, b, c := h.dial(t, "a"), h.dial(t, "b"), h.dial(t, "c")
	for _, cl := range []*client{a, b, c} {
		cl.startReading()
	}
	a.join(t, "big")
	b.join(t, "big")
	c.join(t, "small")
	c.join(t, "big")

	s := scrape(t, reg)
	s.expect(t, "troupe_rooms_active", 2)
	s.expect(t, "troupe_room_members_count", 2)
	s.expect(t, "troupe_room_members_sum", 4)
	s.expect(t, `troupe_room_members_bucket{le="1"}`, 1)
	s.expect(t, `troupe_room_members_bucket{le="2"}`, 1)
	s.expect(t, `troupe_room_members_bucket{le="5"}`, 2)

	// c goes: "small" empties, "big" shrinks.
	cs := h.rec.session(t, "c")
	if err := c.ws.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatalf("close c: %v", err)
	}
	h.rec.waitClose(t, cs)
	eventuallyValue(t, reg, "troupe_rooms_active", 1)
	eventuallyValue(t, reg, "troupe_room_members_sum", 2)
	s = scrape(t, reg)
	s.expect(t, "troupe_room_members_count", 1)
	s.expect(t, `troupe_room_members_bucket{le="1"}`, 0)
	s.expect(t, `troupe_room_members_bucket{le="2"}`, 1)
}

// TestMetricsRefusedUpgrades checks that upgrades refused before a session
// exists are counted by status: 503 at the connection limit, 401 and 403
// from Authorize.
func TestMetricsRefusedUpgrades(t *testing.T) {
	full, fullReg := metricsServer(t, troupe.Config{Settings: troupe.Settings{MaxConnections: 1}})
	full.dial(t, "in").startReading()
	full.rec.session(t, "in")
	full.expectRefused(t, "over the limit", full.dialOptions("over"), http.StatusServiceUnavailable)
	full.expectRefused(t, "over the limit again", full.dialOptions("over-2"), http.StatusServiceUnavailable)
	s := scrape(t, fullReg)
	s.expect(t, `troupe_connections_refused_total{status="503"}`, 2)
	s.expect(t, `troupe_connections_total{transport="websocket"}`, 1)
	s.expect(t, `troupe_connections_active{transport="websocket"}`, 1)

	h, reg := metricsServer(t, troupe.Config{
		Authorize: func(r *http.Request) (string, error) {
			switch r.Header.Get("X-Token") {
			case "good":
				return "user", nil
			case "banned":
				return "", fmt.Errorf("banned: %w", troupe.ErrForbidden)
			}
			return "", errors.New("no token")
		},
	})
	for _, tc := range []struct {
		token string
		want  int
	}{{"", http.StatusUnauthorized}, {"wrong", http.StatusUnauthorized}, {"banned", http.StatusForbidden}} {
		opts := h.dialOptions("refused-" + tc.token)
		opts.HTTPHeader.Set("X-Token", tc.token)
		h.expectRefused(t, fmt.Sprintf("token %q", tc.token), opts, tc.want)
	}
	opts := h.dialOptions("good")
	opts.HTTPHeader.Set("X-Token", "good")
	h.dialWith(t, "good", opts).startReading()
	h.rec.session(t, "good")

	s = scrape(t, reg)
	s.expect(t, `troupe_connections_refused_total{status="401"}`, 2)
	s.expect(t, `troupe_connections_refused_total{status="403"}`, 1)
	s.expect(t, `troupe_connections_total{transport="websocket"}`, 1)
	if _, ok := s[`troupe_connections_refused_total{status="503"}`]; ok {
		t.Errorf("a 503 counted on a server that refused none")
	}
}

// TestMetricsCountOriginRefusals checks that a cross-origin upgrade, refused
// with 403 by the origin check, is counted with the other refused upgrades:
// it is the trace a cross-site hijacking attempt leaves.
func TestMetricsCountOriginRefusals(t *testing.T) {
	h, reg := metricsServer(t, troupe.Config{})
	h.expectRefused(t, "cross-origin", h.withOrigin("evil", "http://evil.example"), http.StatusForbidden)
	scrape(t, reg).expect(t, `troupe_connections_refused_total{status="403"}`, 1)
}

// smallReceiveBuffer makes the client's socket hold little, so that a
// client that does not read stops the server's writes after a few KiB
// rather than after the several MiB loopback autotuning allows.
func smallReceiveBuffer(opts *websocket.DialOptions) *http.Transport {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetReadBuffer(4 << 10)
		}
		return c, err
	}}
	opts.HTTPClient = &http.Client{Transport: tr}
	return tr
}

// TestMetricsOutboundQueueAndSlowConsumers checks the outbound queue gauges
// while a client does not read, and that the overflow that follows is
// counted as a slow consumer and as a 1013 close.
func TestMetricsOutboundQueueAndSlowConsumers(t *testing.T) {
	const (
		queue   = 256
		backlog = 200 // below queue
		msgSize = 4 << 10
	)
	h, reg := metricsServer(t, troupe.Config{Settings: troupe.Settings{
		MaxQueuedMessages: queue,
		MaxQueuedBytes:    64 << 20,
	}}, smallSendBuffers())
	opts := h.dialOptions("stalled")
	tr := smallReceiveBuffer(opts)
	defer tr.CloseIdleConnections()
	stalled := h.dialWith(t, "stalled", opts)
	s := h.rec.session(t, "stalled")
	reader := h.dial(t, "reader")
	reader.startReading()

	// 800 KiB for a client whose path holds some tens of KiB: most of it
	// stays queued, and nothing drains it while the client does not read.
	pad := strings.Repeat("x", msgSize)
	for i := range backlog {
		if err := s.Send("feed", feedMsg{Seq: i, Pad: pad}); err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
	}
	sc := scrape(t, reg)
	depth, total := sc.value(t, "troupe_outbound_queue_max"), sc.value(t, "troupe_outbound_queued_messages")
	if depth < backlog/2 || depth > backlog {
		t.Errorf("troupe_outbound_queue_max = %v with %d messages sent to a client that does not read, want between %d and %d",
			depth, backlog, backlog/2, backlog)
	}
	if total < depth {
		t.Errorf("troupe_outbound_queued_messages = %v, below the longest queue %v", total, depth)
	}
	sc.expect(t, "troupe_slow_consumers_total", 0)
	sc.expect(t, "troupe_unsent_at_close_total", 0)

	// Fill the queue to overflowing.
	var err error
	accepted := backlog
	for i := backlog; err == nil && i < 10*queue; i++ {
		if err = s.Send("feed", feedMsg{Seq: i, Pad: pad}); err == nil {
			accepted++
		}
	}
	if !errors.Is(err, troupe.ErrSlowConsumer) {
		t.Fatalf("sending past the queue limit: %v, want ErrSlowConsumer", err)
	}
	scrape(t, reg).expect(t, "troupe_slow_consumers_total", 1)

	_ = stalled.ws.CloseNow()
	if ev := h.rec.waitClose(t, s); ev.code != troupe.CloseTryAgainLater {
		t.Errorf("OnClose code %d (%q), want 1013", ev.code, ev.reason)
	}
	eventuallyValue(t, reg, `troupe_closes_total{code="1013"}`, 1)
	sc = scrape(t, reg)
	sc.expect(t, "troupe_slow_consumers_total", 1)
	sc.expect(t, `troupe_connections_active{transport="websocket"}`, 1)
	sc.expect(t, "troupe_outbound_queue_max", 0)
	sc.expect(t, "troupe_outbound_queued_messages", 0)
	// What the overflow discarded was accepted and never written: counted.
	// Every accepted frame is either written or counted unsent (how many
	// of each depends on how much the socket took before it stalled).
	unsent, sent := sc.value(t, "troupe_unsent_at_close_total"), sc.value(t, "troupe_messages_sent_total")
	if unsent < 1 || unsent+sent != float64(accepted) {
		t.Errorf("troupe_unsent_at_close_total = %v and troupe_messages_sent_total = %v for %d frames accepted: want every frame written or counted, some unsent",
			unsent, sent, accepted)
	}

	// The reader was never affected.
	reader.send(t, "ping", nil)
	reader.expect(t, "pong")
}
