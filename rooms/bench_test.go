package rooms_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/troupehq/troupe/actors"
	"github.com/troupehq/troupe/rooms"
)

// BenchmarkBroadcast measures a room broadcast to n members on in-memory
// connections, end to end: one op is one message delivered to every member.
func BenchmarkBroadcast(b *testing.B) {
	for _, n := range []int{1, 100, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			sys := actors.NewSystem(nil)
			m := rooms.New(sys, rooms.Config{})
			ctx := context.Background()
			conns := make([]*actors.MemConn, n)
			sessions := make([]*actors.Session, n)
			for i := range conns {
				conns[i] = actors.NewCountingMemConn()
				// Every member may queue all b.N messages: the benchmark
				// measures delivery, not the slow-consumer limit.
				sessions[i] = sys.NewSession(conns[i], actors.Info{}, actors.Options{MaxQueuedMessages: b.N + 1, MaxQueuedBytes: 1 << 40})
				if err := m.Join(ctx, "r", sessions[i]); err != nil {
					b.Fatal(err)
				}
			}
			f := actors.Frame{Data: []byte(`{"type":"room.message","payload":{"room":"r","body":"0123456789abcdef"}}`)}
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
				s.Finish(actors.CloseNormal, "")
			}
			_ = m.Shutdown(ctx)
			sys.Shutdown()
		})
	}
}
