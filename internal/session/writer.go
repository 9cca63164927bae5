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

// startWriting marks a writer running, unless Finish has run.
func (s *Session) startWriting() bool {
	for {
		w := s.state.Load()
		if w&finishedBit != 0 {
			return false
		}
		if s.state.CompareAndSwap(w, w|writingBit) {
			return true
		}
	}
}

// writerDone marks the writer gone, and wakes Finish if it is waiting for
// it. It comes before the report to the actor: once the actor has the
// report it may start the next writer.
func (s *Session) writerDone() {
	if s.state.And(^uint64(writingBit))&finishedBit != 0 {
		close(*s.finished.Load())
	}
}

// write writes one batch and reports to the actor.
func (a *sessionActor) write(batch []Frame, nbytes int) {
	s := a.s
	var report error
	if err := s.conn.Write(batch, time.Now().Add(s.opts.WriteTimeout)); err != nil {
		if s.IsOpen() && errors.Is(err, os.ErrDeadlineExceeded) {
			// A client too slow to take a batch within WriteTimeout is
			// worth telling; a connection that simply went away is
			// reported by OnClose (1006). From the actor: a writer
			// never runs user code (Finish may be waiting for it).
			report = fmt.Errorf("troupe: write: %w", err)
		}
		s.beginClose(CloseAbnormal, "write failed", true, nil)
		_ = s.conn.CloseNow()
	} else {
		s.sys.framesOut.Add(uint64(len(batch)))
		s.sys.bytesOut.Add(uint64(nbytes))
	}
	// The actor reads a.done only once it has the message, and starts no
	// writer before: this goroutine is the only one touching it now.
	d := &a.done
	d.batch, d.bytes, d.report = batch, nbytes, report
	s.writerDone()
	s.sys.root.Send(s.pid, d)
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
