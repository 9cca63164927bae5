package hub_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/hub"
	"github.com/troupehq/troupe/internal/session"
)

// BenchmarkBroadcast measures a room broadcast to n members on in-memory
// connections, end to end: one op is one message delivered to every member.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			sys := session.NewSystem(nil)
			m := hub.New(sys, hub.Config{})
			ctx := context.Background()
			conns := make([]*session.MemConn, n)
			sessions := make([]*session.Session, n)
			for i := range conns {
				conns[i] = session.NewCountingMemConn()
				// Every member may queue all b.N messages: the benchmark
				// measures delivery, not the slow-consumer limit.
				sessions[i] = sys.NewSession(conns[i], session.Info{}, session.Options{MaxQueuedMessages: b.N + 1, MaxQueuedBytes: 1 << 40})
				if err := m.Join(ctx, "r", sessions[i]); err != nil {
					b.Fatal(err)
				}
			}
			f := session.Frame{Data: []byte(`{"type":"room.message","payload":{"room":"r","body":"0123456789abcdef"}}`)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				m.BroadcastFrame("r", f, nil)
			}
			for _, c := range conns {
				if got := c.WaitCount(b.N, time.Minute); got < b.N {
					b.Fatalf("member got %d of %d", got, b.N)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "deliveries/s")
			for _, s := range sessions {
				session.Finish(s, session.CloseNormal, "")
			}
			_ = m.Shutdown(ctx)
			sys.Shutdown()
		})
	}
}

// BenchmarkPublish measures room.publish under the room protocol on one
// node, one member: one op is one message stamped, kept and delivered,
// without a mid and with one (the room then also remembers it).
func BenchmarkPublish(b *testing.B) {
	for _, withMid := range []bool{false, true} {
		b.Run(fmt.Sprintf("mid=%v", withMid), func(b *testing.B) {
			sys := session.NewSystem(nil)
			m := hub.New(sys, hub.Config{Protocol: true, Encode: func(typ string, _ any) ([]byte, error) { return []byte(typ), nil }})
			ctx := context.Background()
			conn := session.NewCountingMemConn()
			s := sys.NewSession(conn, session.Info{}, session.Options{MaxQueuedMessages: b.N + 16, MaxQueuedBytes: 1 << 40})
			if err := m.JoinWith(ctx, "r", s, &hub.JoinOptions{}); err != nil {
				b.Fatal(err)
			}
			conn.WaitCount(1, time.Minute) // room.joined
			mids := make([]string, b.N)
			for i := range mids {
				if withMid {
					mids[i] = fmt.Sprintf("%08x-0000-4000-8000-%012x", i, i)
				}
			}
			body := []byte(`"0123456789abcdef"`)
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := m.PublishOnce("r", s, body, nil, mids[i]); err != nil {
					b.Fatal(err)
				}
			}
			if got := conn.WaitCount(b.N+1, time.Minute); got < b.N+1 {
				b.Fatalf("member got %d of %d", got-1, b.N)
			}
			b.StopTimer()
			session.Finish(s, session.CloseNormal, "")
			_ = m.Shutdown(ctx)
			sys.Shutdown()
		})
	}
}
