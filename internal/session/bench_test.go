package session_test

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

var benchFrame = session.Frame{Data: []byte(`{"type":"bench","payload":"0123456789abcdef"}`)}

// unlimited are limits no benchmark reaches: they measure the send path,
// not the slow-consumer limit.
var unlimited = session.Options{MaxQueuedMessages: 1 << 30, MaxQueuedBytes: 1 << 40}

// BenchmarkSessionSend measures one send through the session actor to an
// in-memory connection: admission, mailbox, writer. Allocations per op are
// what the send path costs the garbage collector per message.
func BenchmarkSessionSend(b *testing.B) {
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	conn := session.NewCountingMemConn()
	s := sys.NewSession(conn, session.Info{}, unlimited)
	defer session.Finish(s, session.CloseNormal, "")
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := session.SendFrame(s, benchFrame); err != nil {
			b.Fatal(err)
		}
	}
	conn.WaitCount(b.N, time.Minute)
}

// BenchmarkSessionSendParallel has many goroutines send to one session (a
// busy client that several rooms and handlers write to at once): what the
// senders contend on is what this measures.
func BenchmarkSessionSendParallel(b *testing.B) {
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	conn := session.NewCountingMemConn()
	s := sys.NewSession(conn, session.Info{}, unlimited)
	defer session.Finish(s, session.CloseNormal, "")
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := session.SendFrame(s, benchFrame); err != nil {
				b.Error(err)
				return
			}
		}
	})
	conn.WaitCount(b.N, time.Minute)
}

// BenchmarkSessionFanout has one goroutine queue one shared frame on many
// sessions, as a room broadcast does: one op is one send to one session.
func BenchmarkSessionFanout(b *testing.B) {
	const n = 1000
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	conns := make([]*session.MemConn, n)
	sessions := make([]*session.Session, n)
	for i := range sessions {
		conns[i] = session.NewCountingMemConn()
		sessions[i] = sys.NewSession(conns[i], session.Info{}, unlimited)
	}
	defer func() {
		for _, s := range sessions {
			session.Finish(s, session.CloseNormal, "")
		}
	}()
	sh := session.Share(benchFrame)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := session.SendShared(sessions[i%n], sh); err != nil {
			b.Fatal(err)
		}
	}
	for i, c := range conns {
		want := b.N / n
		if i < b.N%n {
			want++
		}
		if got := c.WaitCount(want, time.Minute); got < want {
			b.Fatalf("session %d got %d of %d", i, got, want)
		}
	}
}

// BenchmarkNewSession measures spawning and finishing sessions from many
// goroutines at once, as a server accepting connections does.
func BenchmarkNewSession(b *testing.B) {
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	b.SetParallelism(4)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s := sys.NewSession(session.NewMemConn(), session.Info{ID: "x"}, session.Options{})
			session.Finish(s, session.CloseNormal, "")
		}
	})
}

// BenchmarkIdleSessionMemory reports the live heap an idle session costs
// (its actor, mailbox, Session and MemConn), over 10,000 sessions. The
// b.N loop is not used: run it with -benchtime=1x.
func BenchmarkIdleSessionMemory(b *testing.B) {
	const n = 10000
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	sessions := make([]*session.Session, n)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i := range sessions {
		sessions[i] = sys.NewSession(session.NewMemConn(), session.Info{ID: "x"}, session.Options{})
	}
	// A first send and its write leave behind whatever a session keeps
	// after it has been used once.
	for _, s := range sessions {
		_ = s.SendText(benchFrame.Data)
	}
	var wg sync.WaitGroup
	for _, s := range sessions {
		wg.Go(func() {
			for session.QueueLen(s) > 0 {
				time.Sleep(time.Millisecond)
			}
		})
	}
	wg.Wait()
	time.Sleep(300 * time.Millisecond) // the pool lets its idle goroutines go
	runtime.GC()
	runtime.ReadMemStats(&after)
	b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n, "B/session")
	runtime.KeepAlive(sessions)
	for _, s := range sessions {
		session.Finish(s, session.CloseNormal, "")
	}
}
