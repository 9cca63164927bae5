package e2e

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// proxy is a TCP proxy on 127.0.0.1 in front of a server, to break the
// path the way networks do:
//
//	cut()     closes every connection (the client sees its socket fail);
//	hold()    accepts new connections but forwards nothing until release().
type proxy struct {
	URL    string // ws://127.0.0.1:port, in front of the target
	ln     net.Listener
	target string // host:port
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   map[net.Conn]struct{}
	held    []net.Conn
	holding bool
}

func startProxy(t *testing.T, wsURL string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	host := strings.TrimPrefix(wsURL, "ws://")
	path := ""
	if i := strings.IndexByte(host, '/'); i >= 0 {
		host, path = host[:i], host[i:]
	}
	p := &proxy{URL: "ws://" + ln.Addr().String() + path, ln: ln, target: host, conns: make(map[net.Conn]struct{})}
	p.wg.Go(p.accept)
	t.Cleanup(p.close)
	return p
}

func (p *proxy) accept() {
	for {
		down, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[down] = struct{}{}
		if p.holding {
			p.held = append(p.held, down)
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		p.link(down)
	}
}

func (p *proxy) link(down net.Conn) {
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		_ = down.Close()
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		_ = dst.Close()
		_ = src.Close()
	}
	p.wg.Go(func() { pipe(up, down) })
	p.wg.Go(func() { pipe(down, up) })
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		_ = c.Close()
	}
	clear(p.conns)
	p.held = nil
}

func (p *proxy) hold() {
	p.mu.Lock()
	p.holding = true
	p.mu.Unlock()
}

func (p *proxy) release() {
	p.mu.Lock()
	p.holding = false
	held := p.held
	p.held = nil
	p.mu.Unlock()
	for _, c := range held {
		p.link(c)
	}
}

func (p *proxy) close() {
	_ = p.ln.Close()
	p.cut()
	p.wg.Wait()
}
