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

// BenchmarkJoin measures a join under the room protocol into a room of n
// members on in-memory connections: one op is one session joining (its
// room.joined, which lists every member, is written) and leaving again, so
// the room keeps its size. The presence.diffs those changes cause reach
// the members as the presence window passes.
func BenchmarkJoin(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			sys := session.NewSystem(nil)
			m := hub.New(sys, hub.Config{Protocol: true})
			ctx := context.Background()
			opts := session.Options{MaxQueuedMessages: 1 << 20, MaxQueuedBytes: 1 << 40}
			members := make([]*session.Session, n)
			for i := range members {
				members[i] = sys.NewSession(session.NewCountingMemConn(), session.Info{}, opts)
				if err := m.JoinWith(ctx, "r", members[i], &hub.JoinOptions{Meta: []byte(`{"name":"member"}`)}); err != nil {
					b.Fatal(err)
				}
			}
			// The setup's presence.diffs go out within the presence
			// window (a second at most): before the clock starts.
			time.Sleep(1100 * time.Millisecond)
			conns := make([]*session.MemConn, b.N)
			joiners := make([]*session.Session, b.N)
			for i := range joiners {
				conns[i] = session.NewCountingMemConn()
				joiners[i] = sys.NewSession(conns[i], session.Info{}, opts)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i, s := range joiners {
				if err := m.JoinWith(ctx, "r", s, &hub.JoinOptions{Meta: []byte(`{"name":"joiner"}`)}); err != nil {
					b.Fatal(err)
				}
				if got := conns[i].WaitCount(1, time.Minute); got < 1 {
					b.Fatal("no room.joined")
				}
				if err := m.Leave(ctx, "r", s); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			for _, s := range append(members, joiners...) {
				session.Finish(s, session.CloseNormal, "")
			}
			_ = m.Shutdown(ctx)
			sys.Shutdown()
		})
	}
}
