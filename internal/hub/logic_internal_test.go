package hub

import (
	"testing"
	"time"
)

// Logic that sets a timer for every message and cancels the one before (a
// deadline pushed back by every bid) keeps only its live timers, however
// many messages a client sends.
func TestCancelledTimersAreForgotten(t *testing.T) {
	a := &roomActor{m: &Manager{}}
	defer a.stopTimers()
	cancel := func() {}
	for range 10000 {
		cancel()
		cancel = a.startTimer(time.Hour, 0, nil)
	}
	if n := len(a.timers); n > 2*minPruneAt {
		t.Fatalf("%d timers kept for 1 live one", n)
	}
}
