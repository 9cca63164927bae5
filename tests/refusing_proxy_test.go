package tests

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
)

// refusingProxy is an HTTP reverse proxy on 127.0.0.1 that answers 403 to
// WebSocket upgrades, as the proxies the HTTP fallback exists for do, and
// can cut the event streams passing through it mid-conversation.
type refusingProxy struct {
	URL      string // http://127.0.0.1:port
	refuse   atomic.Bool
	upgrades atomic.Int64 // upgrades let through
	streams  atomic.Int64 // event streams opened through it
	// held is a client name (the "name" query parameter): its streams
	// and upgrades are answered 503 while it is set, as an unreachable
	// server would answer.
	held atomic.Value

	mu   sync.Mutex
	open map[*http.Request]context.CancelFunc
}

func startRefusingProxy(t *testing.T, target string) *refusingProxy {
	t.Helper()
	u, err := url.Parse(target)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{Proxy: nil}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(&url.URL{Scheme: "http", Host: u.Host})
			pr.Out.Host = pr.In.Host // the origin check sees the page's own host
		},
		Transport: tr,
		ErrorLog:  log.New(io.Discard, "", 0), // the cuts are on purpose
	}
	p := &refusingProxy{open: make(map[*http.Request]context.CancelFunc)}
	p.refuse.Store(true)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Controls for tests that run outside Go (node): cut the streams,
		// let upgrades through or refuse them again.
		switch r.URL.Path {
		case "/__cut":
			p.cut()
			w.WriteHeader(http.StatusNoContent)
			return
		case "/__allow", "/__refuse":
			p.refuse.Store(r.URL.Path == "/__refuse")
			w.WriteHeader(http.StatusNoContent)
			return
		}
		if name, _ := p.held.Load().(string); name != "" && r.Method == http.MethodGet && r.URL.Query().Get("name") == name {
			http.Error(w, "held back by the test", http.StatusServiceUnavailable)
			return
		}
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
	p.URL = srv.URL
	return p
}

// cut ends every event stream open through the proxy; it reports how many.
func (p *refusingProxy) cut() int { return p.cutWhere(func(*http.Request) bool { return true }) }

// cutWhere ends the event streams whose request cut accepts.
func (p *refusingProxy) cutWhere(cut func(*http.Request) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for r, cancel := range p.open {
		if cut(r) {
			cancel()
			n++
		}
	}
	return n
}
