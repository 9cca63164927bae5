package session

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/troupehq/troupe/transport"
)

// MemConn is an in-memory transport.Conn for tests and benchmarks: it
// records what the session writes, can be made to block like a client that
// stopped reading, and checks that no two writes ever overlap. Its Read
// has nothing to read: it waits until the conn is closed.
type MemConn struct {
	mu         sync.Mutex
	cond       *sync.Cond
	frames     []Frame
	batches    int // Write calls that wrote
	blocked    bool
	passes     int // writes let through while blocked (Step)
	closed     bool
	code       int
	reason     string
	closes     int
	inflight   atomic.Int32
	overlapped atomic.Int32
	discardOK  bool // count frames without keeping them
	count      int
	bytes      int
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

// Read waits until the conn is closed or ctx ends: a MemConn's client
// never sends.
func (c *MemConn) Read(ctx context.Context) (Frame, error) {
	stop := context.AfterFunc(ctx, func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
	defer stop()
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.closed && ctx.Err() == nil {
		c.cond.Wait()
	}
	if c.closed {
		return Frame{}, ErrMemConnClosed
	}
	return Frame{}, ctx.Err()
}

// Write records msgs. While the conn is blocked it waits, like a socket
// whose peer stopped reading, until Unblock, a close, or deadline (then it
// fails with an error wrapping os.ErrDeadlineExceeded, as a socket does).
func (c *MemConn) Write(msgs []Frame, deadline time.Time) error {
	if c.inflight.Add(1) > 1 {
		c.overlapped.Add(1)
	}
	defer c.inflight.Add(-1)
	runtime.Gosched() // widen the window in which an overlap would show
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.blocked && !c.closed && !deadline.IsZero() {
		t := time.AfterFunc(time.Until(deadline), func() { c.mu.Lock(); c.cond.Broadcast(); c.mu.Unlock() })
		defer t.Stop()
	}
	for c.blocked && c.passes == 0 && !c.closed {
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return fmt.Errorf("memconn: write: %w", os.ErrDeadlineExceeded)
		}
		c.cond.Wait()
	}
	if c.closed {
		return ErrMemConnClosed
	}
	if c.blocked {
		c.passes--
	}
	c.count += len(msgs)
	for _, m := range msgs {
		c.bytes += len(m.Data)
	}
	c.batches++
	if !c.discardOK {
		for _, m := range msgs {
			c.frames = append(c.frames, Frame{Data: append([]byte(nil), m.Data...), Binary: m.Binary})
		}
	}
	c.cond.Broadcast()
	return nil
}

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

// Block makes writes wait until Unblock, a close, or their deadline.
func (c *MemConn) Block() { c.mu.Lock(); c.blocked = true; c.mu.Unlock() }

// Step lets one write through a blocked conn, like a client that reads
// one batch and stops again.
func (c *MemConn) Step() {
	c.mu.Lock()
	c.passes++
	c.cond.Broadcast()
	c.mu.Unlock()
}

// Unblock lets waiting and later writes through.
func (c *MemConn) Unblock() {
	c.mu.Lock()
	c.blocked, c.passes = false, 0
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

// Bytes returns how many bytes the frames written held.
func (c *MemConn) Bytes() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// Batches returns how many Write calls wrote their frames: a session hands
// the connection everything queued at once, so frames queued behind a
// blocked write leave in one batch.
func (c *MemConn) Batches() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.batches
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

var _ transport.Conn = (*MemConn)(nil)
