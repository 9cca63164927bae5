package session

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// MemConn is an in-memory Conn for tests and benchmarks: it records what the
// session writes, can be made to block like a client that stopped reading,
// and checks that no two writes ever overlap.
type MemConn struct {
	mu         sync.Mutex
	cond       *sync.Cond
	frames     []Frame
	blocked    bool
	closed     bool
	code       int
	reason     string
	closes     int
	inflight   atomic.Int32
	overlapped atomic.Int32
	discardOK  bool // count frames without keeping them
	count      int
}

// ErrMemConnClosed is returned by writes to a closed MemConn.
var ErrMemConnClosed = errors.New("memconn: closed")

// NewMemConn returns an open MemConn that keeps every frame written.
func NewMemConn() *MemConn {
	c := &MemConn{}
	c.cond = sync.NewCond(&c.mu)
	return c
}

// NewCountingMemConn returns a MemConn that counts frames without keeping
// them, for benchmarks.
func NewCountingMemConn() *MemConn {
	c := NewMemConn()
	c.discardOK = true
	return c
}

// Write records p; while the conn is blocked it waits, like a socket whose
// peer stopped reading.
func (c *MemConn) Write(binary bool, p []byte) error {
	if c.inflight.Add(1) > 1 {
		c.overlapped.Add(1)
	}
	defer c.inflight.Add(-1)
	runtime.Gosched() // widen the window in which an overlap would show
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.blocked && !c.closed {
		c.cond.Wait()
	}
	if c.closed {
		return ErrMemConnClosed
	}
	c.count++
	if !c.discardOK {
		c.frames = append(c.frames, Frame{Data: append([]byte(nil), p...), Binary: binary})
	}
	c.cond.Broadcast()
	return nil
}

// SetWriteDeadline does nothing: a MemConn write blocks only while Block is
// in effect.
func (c *MemConn) SetWriteDeadline(time.Time) error { return nil }

// Close records the close code and reason.
func (c *MemConn) Close(code int, reason string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closes++
	if !c.closed {
		c.closed, c.code, c.reason = true, code, reason
	}
	c.cond.Broadcast()
	return nil
}

// CloseNow closes without a code (CloseAbnormal is recorded).
func (c *MemConn) CloseNow() error { return c.Close(CloseAbnormal, "") }

// Block makes writes wait until Unblock or a close.
func (c *MemConn) Block() { c.mu.Lock(); c.blocked = true; c.mu.Unlock() }

// Unblock lets waiting and later writes through.
func (c *MemConn) Unblock() {
	c.mu.Lock()
	c.blocked = false
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Frames returns a copy of the frames written so far.
func (c *MemConn) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

// Count returns how many frames were written.
func (c *MemConn) Count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.count
}

// WaitCount waits until at least n frames were written or the conn closed,
// up to timeout, and returns the count.
func (c *MemConn) WaitCount(n int, timeout time.Duration) int {
	deadline := time.Now().Add(timeout)
	t := time.AfterFunc(timeout, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer t.Stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for c.count < n && !c.closed && time.Now().Before(deadline) {
		c.cond.Wait()
	}
	return c.count
}

// Closed reports whether the conn was closed, and with which code and
// reason (CloseAbnormal for CloseNow).
func (c *MemConn) Closed() (closed bool, code int, reason string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed, c.code, c.reason
}

// Overlaps returns how many writes began while another was in progress
// (always 0 if the session keeps its promise of one writer).
func (c *MemConn) Overlaps() int {
	return int(c.overlapped.Load())
}
