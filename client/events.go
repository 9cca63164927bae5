package client

import (
	"sync"
	"sync/atomic"
)

// eventLoop runs the application's handlers one at a time, in the order
// they were posted, on one goroutine of their own: the reader never waits
// for the application, so a slow handler delays no pong and no answer.
type eventLoop struct {
	mu   sync.Mutex
	q    []func()
	stop bool
	wake chan struct{} // capacity 1
	done chan struct{} // closed when run has returned
	busy atomic.Bool   // a handler is running
}

func newEventLoop() *eventLoop {
	return &eventLoop{wake: make(chan struct{}, 1), done: make(chan struct{})}
}

func (e *eventLoop) post(f func()) {
	e.mu.Lock()
	if !e.stop {
		e.q = append(e.q, f)
	}
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// close runs what is queued and then ends the loop.
func (e *eventLoop) close() {
	e.mu.Lock()
	e.stop = true
	e.mu.Unlock()
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

func (e *eventLoop) run() {
	defer close(e.done)
	for {
		e.mu.Lock()
		q, stop := e.q, e.stop
		e.q = nil
		e.mu.Unlock()
		for _, f := range q {
			e.busy.Store(true)
			f()
			e.busy.Store(false)
		}
		if len(q) == 0 {
			if stop {
				return
			}
			<-e.wake
		}
	}
}

// handling reports whether a handler is running at the moment. Close does
// not wait for the loop then: called from that handler, it would wait for
// itself; called from elsewhere, the loop ends once the handler returns.
func (e *eventLoop) handling() bool { return e.busy.Load() }
