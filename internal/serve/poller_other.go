//go:build !linux

package serve

// poller is Linux's (poller_linux.go); elsewhere an idle connection's read
// loop waits on a goroutine of its own.
type poller struct{}

func newPoller() *poller        { return &poller{} }
func (*poller) park(*conn) bool { return false }
func (*poller) unpark(*conn)    {}
func (*poller) stop()           {}
