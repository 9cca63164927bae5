package hub_test

import (
	"context"
	"fmt"
	"syscall"
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

// BenchmarkJoin measures a join storm under the room protocol into rooms
// of n members on in-memory connections: one op is one session joining
// (and staying), timed until its room.joined is written. Each room takes
// at most n/10 of the joins (at least one), so it stays within a tenth of
// its size; the joins of one room fall within its presence window, as in
// a storm. Besides the time of the join itself it reports, per join, once
// every presence frame the storm caused has been written:
//   - cpu-ns/join: the process's CPU time (user and system), the presence
//     flushes and the writes to the members included, less what the
//     process uses idle (measured just before) over as long;
//   - wire-B/join and frames/join: what was written to every connection,
//     room.joined and presence frames alike.
func BenchmarkJoin(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			sys := session.NewSystem(nil)
			m := hub.New(sys, hub.Config{Protocol: true})
			ctx := context.Background()
			opts := session.Options{MaxQueuedMessages: 1 << 20, MaxQueuedBytes: 1 << 40}
			perRoom := max(1, n/10)
			nrooms := (b.N + perRoom - 1) / perRoom
			var conns []*session.MemConn
			var all []*session.Session
			for r := range nrooms {
				for range n {
					c := session.NewCountingMemConn()
					s := sys.NewSession(c, session.Info{}, opts)
					if err := m.JoinWith(ctx, fmt.Sprint("r", r), s, &hub.JoinOptions{Meta: []byte(`{"name":"member"}`)}); err != nil {
						b.Fatal(err)
					}
					conns, all = append(conns, c), append(all, s)
				}
			}
			joiners := make([]*session.MemConn, b.N)
			for i := range joiners {
				joiners[i] = session.NewCountingMemConn()
				all = append(all, sys.NewSession(joiners[i], session.Info{}, opts))
			}
			conns = append(conns, joiners...)
			// The setup's presence frames go out within the presence
			// window (a second at most): before the clock starts. settle
			// waits until no frame has been written for longer than that.
			var frames, bytes int
			settle := func() {
				for {
					time.Sleep(1200 * time.Millisecond)
					f, n := 0, 0
					for _, c := range conns {
						f += c.Count()
						n += c.Bytes()
					}
					if f == frames && n == bytes {
						return
					}
					frames, bytes = f, n
				}
			}
			settle()
			frames0, bytes0 := frames, bytes
			// What the process uses idle (timers, the runtime), per second.
			idle0, idleAt := cpuTime(), time.Now()
			time.Sleep(time.Second)
			idleRate := float64(cpuTime()-idle0) / float64(time.Since(idleAt))
			cpu0, start := cpuTime(), time.Now()
			b.ReportAllocs()
			b.ResetTimer()
			for i, c := range joiners {
				s := all[nrooms*n+i]
				if err := m.JoinWith(ctx, fmt.Sprint("r", i/perRoom), s, &hub.JoinOptions{Meta: []byte(`{"name":"joiner"}`)}); err != nil {
					b.Fatal(err)
				}
				if got := c.WaitCount(1, time.Minute); got < 1 {
					b.Fatal("no room.joined")
				}
			}
			b.StopTimer()
			settle()
			cpu := float64(cpuTime()-cpu0) - idleRate*float64(time.Since(start))
			b.ReportMetric(cpu/float64(b.N), "cpu-ns/join")
			b.ReportMetric(float64(bytes-bytes0)/float64(b.N), "wire-B/join")
			b.ReportMetric(float64(frames-frames0)/float64(b.N), "frames/join")
			for _, s := range all {
				session.Finish(s, session.CloseNormal, "")
			}
			_ = m.Shutdown(ctx)
			sys.Shutdown()
		})
	}
}

// cpuTime is the CPU time the process has used, user and system.
func cpuTime() time.Duration {
	var u syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &u); err != nil {
		return 0
	}
	return time.Duration(u.Utime.Nano() + u.Stime.Nano())
}
