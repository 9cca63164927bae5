package session_test

import (
	"fmt"
	"math"
	"time"

	"github.com/troupehq/troupe/internal/session"
)

// A session driven by an in-memory connection: sends are queued, Close
// writes them out before the close frame, and Finish (the transport's call
// once the connection is gone) reports the close exactly once.
func ExampleSystem_NewSession() {
	sys := session.NewSystem(nil)
	defer sys.Shutdown()

	conn := session.NewMemConn()
	s := sys.NewSession(conn, session.Info{ID: "s1"}, session.Options{
		OnClose: func(s *session.Session, code int, reason string) {
			fmt.Printf("%s closed: %d %s\n", s.ID(), code, reason)
		},
	})

	_ = s.SendText([]byte("hello"))
	_ = s.SendText([]byte("world"))
	_ = s.Close("bye")

	conn.WaitCount(math.MaxInt, 5*time.Second) // returns once the conn is closed
	for _, f := range conn.Frames() {
		fmt.Println(string(f.Data))
	}
	_, code, reason := conn.Closed()
	fmt.Println("close frame:", code, reason)

	session.Finish(s, session.CloseNormal, "bye")
	// Output:
	// hello
	// world
	// close frame: 1000 bye
	// s1 closed: 1000 bye
}
