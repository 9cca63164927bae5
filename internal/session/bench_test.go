package session_test

import (
	"testing"

	"github.com/troupehq/troupe/internal/session"
)

// BenchmarkSessionSend measures one send through the session actor to an
// in-memory connection: admission, mailbox, writer. Allocations per op are
// what the send path costs the garbage collector per message.
func BenchmarkSessionSend(b *testing.B) {
	sys := session.NewSystem(nil)
	defer sys.Shutdown()
	conn := session.NewCountingMemConn()
	s := sys.NewSession(conn, session.Info{}, session.Options{MaxQueuedMessages: b.N + 1, MaxQueuedBytes: 1 << 40})
	defer session.Finish(s, session.CloseNormal, "")
	f := session.Frame{Data: []byte(`{"type":"bench","payload":"0123456789abcdef"}`)}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := session.SendFrame(s, f); err != nil {
			b.Fatal(err)
		}
	}
	conn.WaitCount(b.N, 60e9)
}
