package session

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// The writer: a goroutine of the system's pool that the actor starts with
// one batch (or the close frame) and that ends when that write returns. An
// idle session holds none.

// claimWriter marks a writer running, for the actor to start one. It
// fails once Finish has run, and while a writer is running; then, with
// pending, it leaves word for that writer to report back when done.
func (s *Session) claimWriter(pending bool) bool {
	for {
		w := s.state.Load()
		nw := w | writingBit
		switch {
		case w&finishedBit != 0:
			return false
		case w&writingBit != 0 && (!pending || w&pendingBit != 0):
			return false
		case w&writingBit != 0:
			nw = w | pendingBit
		}
		if s.state.CompareAndSwap(w, nw) {
			return w&writingBit == 0
		}
	}
}

// writerDone marks the writer gone, wakes Finish if it is waiting for it,
// and returns the state as the writer left it. Once the bit is clear the
// actor may start the next writer.
func (s *Session) writerDone() (old uint64) {
	for {
		old = s.state.Load()
		if s.state.CompareAndSwap(old, old&^(writingBit|pendingBit)) {
			break
		}
	}
	if old&finishedBit != 0 {
		if g := s.gone.Load(); g != nil {
			close(*g)
		}
	}
	return old
}

// write writes one batch. It reports to the actor only when the actor has
// to act: frames queued while it wrote (pendingBit), a close to finish, or
// a write error. A session that gets a message now and then costs one
// mailbox run per message, not two.
func (s *Session) write(batch []Frame, nbytes int) {
	var report error
	if err := s.conn.Write(batch, time.Now().Add(s.opts.WriteTimeout)); err != nil {
		if s.IsOpen() && errors.Is(err, os.ErrDeadlineExceeded) {
			// A client too slow to take a batch within WriteTimeout is
			// worth telling; a connection that simply went away is
			// reported by OnClose (1006). From the actor: a writer
			// never runs user code (Finish may be waiting for it).
			report = fmt.Errorf("troupe: write: %w", err)
			// Kept before the writer is marked gone, so that a Finish
			// waiting for this writer finds it.
			s.writeErr.Store(&report)
		}
		s.beginClose(CloseAbnormal, "write failed", true, nil)
		_ = s.conn.CloseNow()
		s.unsent(len(batch)) // some may have left; none is known to have arrived
	} else {
		s.sys.framesOut.Add(uint64(len(batch)))
		s.sys.bytesOut.Add(uint64(nbytes))
	}
	s.release(len(batch), nbytes)
	s.caughtUp()
	old := s.writerDone()
	switch {
	case report != nil:
		s.sys.root.Send(s.pid, &writeFailed{})
	case old&(pendingBit|closingBit) != 0 && old&finishedBit == 0:
		s.sys.root.Send(s.pid, writerIdle{})
	}
}

// writeClose sends the close frame and waits for the handshake (bounded by
// the connection's own timeouts); for CloseAbnormal it drops the
// connection instead.
func (s *Session) writeClose(code int, reason string) {
	if code == CloseAbnormal {
		_ = s.conn.CloseNow()
	} else {
		_ = s.conn.Close(code, reason)
	}
	s.writerDone()
}
