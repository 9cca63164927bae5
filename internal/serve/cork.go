package serve

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// corkWriter sits under coder/websocket's bufio.Writer. coder/websocket
// flushes after every frame, which is one write(2) per message; while the
// session's writer drains a batch it "corks" this writer, so the frames of
// the batch collect in memory and leave in one system call when the batch
// ends. Outside a batch (pings, pongs, close frames) writes go straight
// through. The buffer is borrowed from a pool only while corked, so an idle
// connection holds none.
//
// coder/websocket serialises frame writes under its own lock, and bytes keep
// their order here, so the stream on the wire is the same as without
// corking: only the number of system calls changes.
type corkWriter struct {
	mu   sync.Mutex
	conn net.Conn
	buf  *[]byte
	// wake, made by a batch waiting for coder/websocket to finish a
	// frame, is closed when it has.
	wake chan struct{}
	// What coder/websocket wrote, followed for direct framing (frames.go).
	scan   frameScan
	corked bool
	shut   bool // the connection is closed

	// A batch's deadline is set on the socket only once a write of the
	// batch would wait (send); raw is nil where that cannot be told.
	raw      *rawWriter
	deadline time.Time // the batch's, while lazy
	lazy     bool      // the batch has a deadline not yet set
	armed    bool      // the batch set its deadline on the socket
	// until is the lazy batch's deadline as its own goroutine knows it,
	// without mu: only that goroutine reads or writes it (lockBatch).
	until time.Time

	// Every deadline the cork sets goes through setDeadline, under dmu
	// (never held across a write). Once Close has set its own (closeBy),
	// it stands: a batch neither extends it nor clears it.
	dmu     sync.Mutex
	closing atomic.Bool // set under dmu
}

// setDeadline sets the socket's write deadline, unless Close has set its
// own.
func (w *corkWriter) setDeadline(t time.Time) {
	w.dmu.Lock()
	defer w.dmu.Unlock()
	if !w.closing.Load() {
		_ = w.conn.SetWriteDeadline(t)
	}
}

// maxCork bounds the bytes held back; past it the buffer is written out
// mid-batch.
const maxCork = 64 << 10

var corkPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

// Write is coder/websocket's: every byte it writes comes here (see
// hijackCapture.Hijack).
func (w *corkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.scan.feed(p)
	if w.wake != nil && w.scan.boundary() {
		close(w.wake)
		w.wake = nil
	}
	if err := w.put(p); err != nil {
		// The frame will not be finished: no batch waits for it.
		w.shutLocked()
		return 0, err
	}
	return len(p), nil
}

// closed reports whether the connection is closed (or broke under a
// write).
func (w *corkWriter) closed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.shut
}

// close marks the connection closed, waking a batch waiting in frames.
func (w *corkWriter) close() {
	w.mu.Lock()
	w.shutLocked()
	w.mu.Unlock()
}

func (w *corkWriter) shutLocked() {
	w.shut = true
	if w.wake != nil {
		close(w.wake)
		w.wake = nil
	}
}

// put writes p, or keeps it in the buffer while corked; called with mu held.
func (w *corkWriter) put(p []byte) error {
	if !w.corked {
		_, err := w.conn.Write(p)
		return err
	}
	b := *w.buf
	if len(b)+len(p) > maxCork && len(b) > 0 {
		if err := w.send(b); err != nil {
			return err
		}
		b = b[:0]
	}
	if len(p) > maxCork {
		*w.buf = b
		return w.send(p)
	}
	*w.buf = append(b, p...)
	return nil
}

// send writes b for a batch; called with mu held. Under a lazy deadline
// it first writes what the socket takes at once, and sets the deadline
// only if some is left, for the write that then waits: setting a deadline
// and clearing it after each batch were two timer updates in the runtime,
// 4–6 % of a fan-out profile, and a client that reads keeps room in its
// socket's buffer.
func (w *corkWriter) send(b []byte) error {
	if w.lazy {
		b = b[w.raw.try(b):]
		if len(b) == 0 {
			return nil
		}
		w.lazy, w.armed = false, true
		w.setDeadline(w.deadline)
	}
	_, err := w.conn.Write(b)
	return err
}

// corkUntil corks for a batch that must be out by deadline, which it sets
// on the socket only if a write would wait (send). Only where raw is set.
func (w *corkWriter) corkUntil(deadline time.Time) {
	w.until = deadline
	w.lockBatch()
	w.deadline, w.lazy = deadline, !w.armed && !w.closing.Load()
	w.corked = true
	if w.buf == nil {
		w.buf = corkPool.Get().(*[]byte)
	}
	w.mu.Unlock()
}

// lockBatch takes mu, on the goroutine writing a batch. If mu is held, the
// holder may be a write of coder/websocket's (a ping, a pong) stuck on the
// full socket of a client that stopped reading: under a lazy deadline the
// batch's deadline then goes on the socket before the wait, as it would
// have from the batch's start, so that it ends that write, and the wait,
// in time.
func (w *corkWriter) lockBatch() {
	if w.mu.TryLock() {
		return
	}
	if w.until.IsZero() {
		w.mu.Lock()
		return
	}
	w.setDeadline(w.until)
	w.mu.Lock()
	w.lazy, w.armed = false, true
}

// armLocked sets a lazy batch's deadline on the socket now, before the
// batch waits for coder/websocket to finish a frame (frame): its next
// write may be stuck on a full socket. Called with mu held.
func (w *corkWriter) armLocked() {
	if w.lazy {
		w.lazy, w.armed = false, true
		w.setDeadline(w.deadline)
	}
}

// disarm ends the batch's deadline: it clears the one set on the socket,
// if the batch set it.
func (w *corkWriter) disarm() {
	w.lockBatch()
	armed := w.armed
	w.lazy, w.armed = false, false
	w.mu.Unlock()
	w.until = time.Time{}
	if armed {
		w.setDeadline(time.Time{})
	}
}

// closeBy bounds what is left to write, for Close, by deadline, and keeps
// it: a batch still under way neither defers it (lazy), nor extends it
// (lockBatch, send), nor clears it (disarm), which would leave a write
// stuck on a full socket with nothing to end it.
func (w *corkWriter) closeBy(deadline time.Time) {
	w.dmu.Lock()
	w.closing.Store(true)
	_ = w.conn.SetWriteDeadline(deadline) // without mu: it ends a write stuck under it
	w.dmu.Unlock()
	w.mu.Lock()
	w.lazy = false
	w.mu.Unlock()
}

func (w *corkWriter) cork() {
	w.mu.Lock()
	w.corked = true
	if w.buf == nil {
		w.buf = corkPool.Get().(*[]byte)
	}
	w.mu.Unlock()
}

// uncork writes out what the batch collected and returns the buffer.
func (w *corkWriter) uncork() error {
	w.mu.Lock()
	return w.uncorkLocked()
}

// uncorkBatch is uncork on the goroutine writing the batch (lockBatch).
func (w *corkWriter) uncorkBatch() error {
	w.lockBatch()
	return w.uncorkLocked()
}

func (w *corkWriter) uncorkLocked() error {
	defer w.mu.Unlock()
	w.corked = false
	if w.buf == nil {
		return nil
	}
	var err error
	if b := *w.buf; len(b) > 0 {
		err = w.send(b)
	}
	*w.buf = (*w.buf)[:0]
	if cap(*w.buf) <= 4*maxCork {
		corkPool.Put(w.buf)
	}
	w.buf = nil
	return err
}
