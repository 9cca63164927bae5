package e2e

import (
	"testing"
	"time"

	"github.com/troupehq/troupe"
	"github.com/troupehq/troupe/client"
)

// TestCloseFromAHandler checks that a handler may close its own client:
// Close returns (it does not wait for the handler that called it), the
// client reports Closed, and no goroutine is left once the handler has
// returned (goleak, in TestMain).
func TestCloseFromAHandler(t *testing.T) {
	srv, url := serve(t, troupe.Config{})
	troupe.Handle(srv, "hello", func(c *troupe.Context, _ struct{}) error {
		return c.Session().Send("bye", nil)
	})
	st := newStatuses()
	c := dial(t, []string{url}, &client.Options{OnStatus: st.add})
	returned := make(chan error, 1)
	client.Handle(c, "bye", func(struct{}) { returned <- c.Close() })
	if err := c.Send(ctxT(t), "hello", nil); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-returned:
		if err != nil {
			t.Fatalf("Close from a handler: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("Close from a handler did not return")
	}
	st.waitFor(t, 0, "the client to report Closed", func(s client.Status) bool { return s.State == client.Closed })
}
