package e2e

import (
	"context"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

// refusingProxy is an HTTP reverse proxy on 127.0.0.1 that answers 403 to
// every WebSocket upgrade, as the proxies the fallback exists for do, and
// can cut the event streams passing through it.
type refusingProxy struct {
	URL      string // ws://127.0.0.1:port/path, in front of the target
	refuse   atomic.Bool
	upgrades atomic.Int64 // upgrades let through
	streams  atomic.Int64 // event streams opened through it

	mu   sync.Mutex
	open map[*http.Request]context.CancelFunc
}

func startRefusingProxy(t *testing.T, wsURL string) *refusingProxy {
	t.Helper()
	target, err := url.Parse(strings.Replace(wsURL, "ws://", "http://", 1))
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: nil}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(&url.URL{Scheme: "http", Host: target.Host}) },
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0), // the cuts are on purpose
	}
	p := &refusingProxy{open: make(map[*http.Request]context.CancelFunc)}
	p.refuse.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
			if p.refuse.Load() {
				http.Error(w, "websocket not allowed here", http.StatusForbidden)
				return
			}
			p.upgrades.Add(1)
		}
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		if r.Method == http.MethodGet && r.URL.Query().Has("sse") {
			p.streams.Add(1)
			p.mu.Lock()
			p.open[r] = cancel
			p.mu.Unlock()
			defer func() {
				p.mu.Lock()
				delete(p.open, r)
				p.mu.Unlock()
			}()
		}
		rp.ServeHTTP(w, r.WithContext(ctx))
	}))
	t.Cleanup(func() {
		p.cut()
		srv.Close()
		tr.CloseIdleConnections()
	})
	p.URL = "ws://" + srv.Listener.Addr().String() + target.Path
	return p
}

// cut ends every event stream open through the proxy.
func (p *refusingProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, cancel := range p.open {
		cancel()
	}
}

// Behind a proxy that refuses WebSocket upgrades, the client falls back to
// SSE and POST by itself: requests are answered, a room works, and when
// the event stream is cut mid-conversation the stream is reopened within
// the same session, every message arriving once, in order, without even a
// rejoin.
func TestFallbackBehindARefusingProxy(t *testing.T) {
	srv, url := serve(t, troupe.Config{})
	troupe.HandleRequest(srv, "sum", func(_ *troupe.Context, xs []int) (int, error) {
		n := 0
		for _, x := range xs {
			n += x
		}
		return n, nil
	})
	p := startRefusingProxy(t, url)
	ctx := ctxT(t)
	st := newStatuses()
	annC := dial(t, []string{p.URL}, &client.Options{
		Transport: &client.Fallback{RetryWebSocket: -1},
		OnStatus:  st.add,
	})
	if n, err := client.Request[int](ctx, annC, "sum", []int{1, 2, 3}); err != nil || n != 6 {
		t.Fatalf("sum over the fallback: %d, %v", n, err)
	}
	if p.streams.Load() != 1 || p.upgrades.Load() != 0 {
		t.Fatalf("%d streams and %d upgrades through the proxy, want 1 and 0", p.streams.Load(), p.upgrades.Load())
	}

	ann := annC.Room("fallback")
	bob := dial(t, []string{url}, nil).Room("fallback")
	got := watch(ann)
	if _, err := ann.Join(ctx, map[string]string{"name": "ann"}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, bob, 1, 5)
	got.waitSeq(t, 5)
	for i := 0; i < 3; i++ {
		p.cut()
		publish(t, bob, 6+11*i, 15+11*i)
		if seq, err := ann.Publish(ctx, 16+11*i); err != nil || seq != uint64(16+11*i) {
			t.Fatalf("ann publishes after a cut: %d, %v", seq, err)
		}
	}
	got.waitSeq(t, 38)
	got.check(t, 38)
	if p.streams.Load() < 2 {
		t.Fatalf("%d streams through the proxy: the cuts did not cut", p.streams.Load())
	}
	got.mu.Lock()
	recovers := len(got.recovers)
	got.mu.Unlock()
	if recovers != 0 {
		t.Fatalf("the room recovered %d times; a reopened stream continues the session", recovers)
	}
	if n, err := client.Request[int](ctx, annC, "sum", []int{40, 2}); err != nil || n != 42 {
		t.Fatalf("sum after the cuts: %d, %v", n, err)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.all) != 1 {
		t.Fatalf("statuses %+v, want one Connected: the cuts are invisible", st.all)
	}
}

// Once WebSocket upgrades pass again, a client on the fallback moves back
// to a WebSocket, and its room resumes there.
func TestFallbackMovesBackToWebSocket(t *testing.T) {
	_, url := serve(t, troupe.Config{})
	p := startRefusingProxy(t, url)
	ctx := ctxT(t)
	st := newStatuses()
	annC := dial(t, []string{p.URL}, &client.Options{
		Transport: &client.Fallback{RetryWebSocket: 50 * time.Millisecond},
		OnStatus:  st.add,
	})
	ann := annC.Room("back")
	bob := dial(t, []string{url}, nil).Room("back")
	got := watch(ann)
	if _, err := ann.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Join(ctx, nil); err != nil {
		t.Fatal(err)
	}
	publish(t, bob, 1, 3)
	got.waitSeq(t, 3)
	if p.upgrades.Load() != 0 {
		t.Fatal("an upgrade passed the refusing proxy")
	}
	p.refuse.Store(false)
	st.waitFor(t, 0, "reconnected", func(s client.Status) bool { return s.State == client.Connected && s.Reconnected })
	publish(t, bob, 4, 6)
	got.waitSeq(t, 6)
	got.check(t, 6)
	if p.upgrades.Load() < 2 { // the probe's, then the client's own
		t.Fatalf("%d upgrades through the proxy, want the client back on WebSocket", p.upgrades.Load())
	}
}
