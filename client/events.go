package client

import (
	"bytes"
	"runtime"
	"strconv"
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
	gid  atomic.Uint64 // the loop goroutine's id
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
	e.gid.Store(goid())
	for {
		e.mu.Lock()
		q, stop := e.q, e.stop
		e.q = nil
		e.mu.Unlock()
		for _, f := range q {
			f()
		}
		if len(q) == 0 {
			if stop {
				return
			}
			<-e.wake
		}
	}
}

// onLoop reports whether the caller is a handler running on the loop.
func (e *eventLoop) onLoop() bool { return e.gid.Load() == goid() }

// goid is the calling goroutine's id, read from its stack header
// ("goroutine 7 [running]:"). Close uses it once, to tell whether it was
// called from a handler, where waiting for the handler goroutine to end
// would wait for itself.
func goid() uint64 {
	var buf [64]byte
	b := buf[:runtime.Stack(buf[:], false)]
	b = bytes.TrimPrefix(b, []byte("goroutine "))
	if i := bytes.IndexByte(b, ' '); i > 0 {
		b = b[:i]
	}
	n, _ := strconv.ParseUint(string(b), 10, 64)
	return n
}
