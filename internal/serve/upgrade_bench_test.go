package serve

import (
	"bufio"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkUpgrade measures a WebSocket handshake over loopback, client
// and server in this process: dial, the upgrade request, its 101 read
// back, close. "handler's 101" is the handler under net/http's own
// ResponseWriter, which writes the 101 itself after the hijack
// (upgrade.go); "net/http's 101" puts a middleware's writer in between,
// so that the 101 goes through net/http's chunk writer, as it did before.
func BenchmarkUpgrade(b *testing.B) {
	for _, m := range []struct {
		name string
		wrap bool
	}{{"handler's 101", false}, {"net/http's 101", true}} {
		b.Run(m.name, func(b *testing.B) {
			h := benchHandler(b, Hooks{})
			var handler http.Handler = h
			if m.wrap {
				handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					h.ServeHTTP(passThrough{w}, r)
				})
			}
			ts := httptest.NewServer(handler)
			defer ts.Close()
			addr := ts.Listener.Addr().String()
			req := upgradeRequest("")
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				nc, err := net.Dial("tcp", addr)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := nc.Write(req); err != nil {
					b.Fatal(err)
				}
				resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
				if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
					b.Fatalf("upgrade: %v %v", resp, err)
				}
				_ = nc.Close()
			}
		})
	}
}

// passThrough is a middleware's ResponseWriter that adds nothing.
type passThrough struct{ http.ResponseWriter }

func (p passThrough) Unwrap() http.ResponseWriter { return p.ResponseWriter }
