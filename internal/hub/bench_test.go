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
