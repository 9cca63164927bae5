package actors_test

import (
	"fmt"
	"math"
	"time"

	"github.com/troupehq/troupe/actors"
)

// A session driven by an in-memory connection: sends are queued, Close
// writes them out before the close frame, and Finish (the transport's call
// once the connection is gone) reports the close exactly once.
func ExampleSystem_NewSession() {
	sys := actors.NewSystem(nil)
	defer sys.Shutdown()

	conn := actors.NewMemConn()
	s := sys.NewSession(conn, actors.Info{ID: "s1"}, actors.Options{
		OnClose: func(s *actors.Session, code int, reason string) {
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

	s.Finish(actors.CloseNormal, "bye")
	// Output:
	// hello
	// world
	// close frame: 1000 bye
	// s1 closed: 1000 bye
}
