package actors_test

import (
	"testing"

	"github.com/troupehq/troupe/actors"
)

// BenchmarkSessionSend measures one send through the session actor to an
// in-memory connection: admission, mailbox, writer. Allocations per op are
// what the send path costs the garbage collector per message.
func BenchmarkSessionSend(b *testing.B) {
	sys := actors.NewSystem(nil)
	defer sys.Shutdown()
	conn := actors.NewCountingMemConn()
	s := sys.NewSession(conn, actors.Info{}, actors.Options{MaxQueuedMessages: b.N + 1, MaxQueuedBytes: 1 << 40})
	defer s.Finish(actors.CloseNormal, "")
	f := actors.Frame{Data: []byte(`{"type":"bench","payload":"0123456789abcdef"}`)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := s.SendFrame(f); err != nil {
			b.Fatal(err)
		}
	}
	conn.WaitCount(b.N, 60e9)
}
