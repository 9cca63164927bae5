package serve

import (
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/troupehq/troupe/transport"
)

// stuckConn is a socket whose peer stopped reading: a write waits until the
// write deadline passes, and then fails, as on a full socket.
type stuckConn struct {
	net.Conn // unused: only Write and SetWriteDeadline are called

	mu       sync.Mutex
	deadline time.Time
	changed  chan struct{}
	waiting  int // writes waiting now
}

// stuck waits until a write waits on the socket.
func (c *stuckConn) stuck() {
	for {
		c.mu.Lock()
		n := c.waiting
		c.mu.Unlock()
		if n > 0 {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func newStuckConn() *stuckConn { return &stuckConn{changed: make(chan struct{})} }

func (c *stuckConn) Write([]byte) (int, error) {
	c.mu.Lock()
	c.waiting++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
	}()
	for {
		c.mu.Lock()
		d, changed := c.deadline, c.changed
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !d.IsZero() {
			wait := time.Until(d)
			if wait <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			timeout = time.After(wait)
		}
		select {
		case <-timeout:
		case <-changed:
		}
	}
}

func (c *stuckConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.changed)
	c.changed = make(chan struct{})
	return nil
}

// A pong coder/websocket writes between two batches, to a client that
// stopped reading, waits on the full socket holding the cork's lock, with no
// deadline on the socket. A batch that defers its deadline (corkUntil) must
// still be bounded by it: it sets it on the socket before it waits for the
// lock, which ends the stuck write in time, as it did when every batch set
// its deadline at its start.
func TestBatchBehindAStuckWriteSetsItsDeadline(t *testing.T) {
	sc := newStuckConn()
	w := &corkWriter{conn: sc}
	pong := make(chan error, 1)
	go func() { _, err := w.Write([]byte{0x8a, 0}); pong <- err }()
	sc.stuck() // the pong waits on the socket, holding the lock

	corked := make(chan struct{})
	go func() {
		w.corkUntil(time.Now().Add(200 * time.Millisecond))
		close(corked)
	}()
	select {
	case <-corked:
	case <-time.After(5 * time.Second):
		_ = sc.SetWriteDeadline(time.Now()) // let both go, for the test's end
		<-corked
		t.Fatal("a batch with a 200 ms deadline still waits after 5 s behind a stuck write")
	}
	if err := <-pong; err == nil {
		t.Error("the stuck write succeeded")
	}
	w.mu.Lock()
	armed, lazy := w.armed, w.lazy
	w.mu.Unlock()
	if !armed || lazy {
		t.Errorf("after waiting: armed %v, lazy %v; want the deadline set on the socket", armed, lazy)
	}
	w.disarm()
	sc.mu.Lock()
	left := sc.deadline
	sc.mu.Unlock()
	if !left.IsZero() {
		t.Errorf("the batch left its deadline on the socket: %v", left)
	}
	_ = w.uncork()
}

// Close (corkedConn.Close: closeBy, then uncork) writes what a batch
// corked, on a full socket, bounded by its own short deadline. The batch,
// framing on meanwhile, finds the lock held: the deadline it would set on
// the socket then, later than Close's, must not replace Close's, nor its
// disarm clear it.
func TestCloseKeepsItsDeadlineOverABatchs(t *testing.T) {
	sc := newStuckConn()
	// No raw writer: nothing here gets as far as a write of the batch's
	// own (Close's uncork is not lazy, and the batch's lock is contended).
	w := &corkWriter{conn: sc}
	w.corkUntil(time.Now().Add(3 * time.Second))
	if _, err := w.frames([]transport.Message{{Data: []byte("a")}}, false); err != nil {
		t.Fatal(err)
	}
	closed := make(chan time.Duration, 1)
	start := time.Now()
	go func() {
		w.closeBy(time.Now().Add(200 * time.Millisecond))
		_ = w.uncork()
		w.close()
		closed <- time.Since(start)
	}()
	// Close's uncork waits on the socket, holding the lock; the batch
	// goes on.
	sc.stuck()
	_, _ = w.frames([]transport.Message{{Data: []byte("b")}}, false)
	_ = w.uncorkBatch()
	w.disarm()
	if d := <-closed; d > time.Second {
		t.Errorf("Close's write, bounded at 200 ms, returned after %v: the batch's deadline replaced Close's", d.Round(time.Millisecond))
	}
	sc.mu.Lock()
	left := sc.deadline
	sc.mu.Unlock()
	if left.IsZero() {
		t.Error("the batch's disarm cleared Close's deadline")
	}
}
