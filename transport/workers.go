package transport

import "time"

// The handler's workers run the connections' callbacks. A connection with
// messages waiting is handed to an idle worker, or to a new one if none is
// idle, so a handler that blocks holds up only its own connection, as it
// would on a goroutine of its own. Workers are kept between bursts, so the
// cost of starting one (a goroutine, the stack its handlers grow, the
// goroutine ID that Shutdown needs) is paid once per burst of concurrency,
// not once per message; a worker idle for idleWorkerTimeout exits, so an
// idle server keeps none.
const (
	maxIdleWorkers    = 1024
	idleWorkerTimeout = 100 * time.Millisecond
)

// worker is an idle worker's mailbox: dispatch sends it the next connection
// (nil: exit).
type worker struct {
	next      chan *conn
	idleSince time.Time
}

// dispatch hands c, which has items queued and no worker, to a worker.
func (h *Handler) dispatch(c *conn) {
	h.pmu.Lock()
	if n := len(h.idle); n > 0 {
		w := h.idle[n-1]
		h.idle[n-1] = nil
		h.idle = h.idle[:n-1]
		h.pmu.Unlock()
		w.next <- c // buffered: an idle worker's channel is empty
		return
	}
	h.pmu.Unlock()
	go h.work(c)
}

// work is a worker's goroutine: it serves c, then whatever connection it is
// handed next, until it has been idle too long or the handler stopped.
func (h *Handler) work(c *conn) {
	// Registered so that Shutdown or Close called from a callback running
	// here does not wait for this worker's own connection.
	gid := goroutineID()
	h.mu.Lock()
	h.workers[gid] = struct{}{}
	h.mu.Unlock()
	defer func() {
		h.mu.Lock()
		delete(h.workers, gid)
		h.mu.Unlock()
	}()
	w := &worker{next: make(chan *conn, 1)}
	for c != nil {
		c.run()
		c = h.park(w)
	}
}

// park puts w on the idle list and waits for a connection; nil means exit.
// The list is a stack: the most recently idle worker is taken first, so
// the ones at the bottom stay idle and the reaper lets them go.
func (h *Handler) park(w *worker) *conn {
	h.pmu.Lock()
	if h.stopped || len(h.idle) >= maxIdleWorkers {
		h.pmu.Unlock()
		return nil
	}
	w.idleSince = time.Now()
	h.idle = append(h.idle, w)
	if h.reaper == nil {
		h.reaper = time.AfterFunc(idleWorkerTimeout, h.reap)
	} else if !h.reaping {
		h.reaper.Reset(idleWorkerTimeout)
	}
	h.reaping = true
	h.pmu.Unlock()
	return <-w.next
}

// reap lets the workers idle for idleWorkerTimeout go. One timer serves
// all the workers, armed only while some are idle, so parking a worker
// costs no timer of its own.
func (h *Handler) reap() {
	h.pmu.Lock()
	defer h.pmu.Unlock()
	cut := time.Now().Add(-idleWorkerTimeout)
	n := 0
	for n < len(h.idle) && !h.idle[n].idleSince.After(cut) {
		h.idle[n].next <- nil
		n++
	}
	h.idle = append(h.idle[:0], h.idle[n:]...)
	clear(h.idle[len(h.idle):cap(h.idle)])
	if len(h.idle) == 0 {
		h.reaping = false
		return
	}
	// Again when the oldest one left has been idle long enough.
	h.reaper.Reset(h.idle[0].idleSince.Add(idleWorkerTimeout).Sub(time.Now()) + time.Millisecond)
}

// stopWorkers lets the idle workers go and has busy ones exit when done.
func (h *Handler) stopWorkers() {
	h.pmu.Lock()
	h.stopped = true
	idle := h.idle
	h.idle = nil
	if h.reaper != nil {
		h.reaper.Stop()
		h.reaping = false
	}
	h.pmu.Unlock()
	for _, w := range idle {
		w.next <- nil
	}
}
