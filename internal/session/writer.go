package session

import (
	"errors"
	"fmt"
	"os"
	"time"
)

// writeLoop drains the outbound queue to the connection. It is the only
// goroutine that writes data or the close frame, so writes never overlap and
// leave in the order they were accepted.
func (s *Session) writeLoop() {
	defer s.writers.Done()
	var batch []Frame
	for {
		s.mu.Lock()
		if len(s.wq) == 0 || s.discard {
			// Queue empty: close if asked and everything accepted is out
			// (frames still in the mailbox restart the writer on arrival).
			closeNow := s.state == stateClosing && !s.closeSent && (s.queued == 0 || s.discard)
			if closeNow {
				s.closeSent = true
			}
			code, reason := s.closeCode, s.closeReason
			s.writing = false
			if cap(s.wq) > 64 {
				s.wq = nil // an idle session keeps no large buffer
			}
			s.mu.Unlock()
			if closeNow {
				s.writeClose(code, reason)
			}
			return
		}
		batch, s.wq = s.wq, batch[:0]
		s.mu.Unlock()

		err := s.writeBatch(batch)

		nbytes := 0
		for _, f := range batch {
			nbytes += len(f.Data)
		}
		s.mu.Lock()
		s.queued -= len(batch)
		s.queuedBytes -= nbytes
		wasOpen := s.state == stateOpen
		s.mu.Unlock()
		clear(batch)
		if err == nil {
			s.sys.framesOut.Add(uint64(len(batch)))
			s.sys.bytesOut.Add(uint64(nbytes))
		}
		if err != nil {
			if wasOpen && errors.Is(err, os.ErrDeadlineExceeded) {
				// A client too slow to take a batch within WriteTimeout
				// is worth telling; a connection that simply went away
				// is reported by OnClose (1006). Through the actor: the
				// writer must never run user code (Finish waits for it).
				s.sys.root.Send(s.pid, &reportError{err: fmt.Errorf("troupe: write: %w", err)})
			}
			s.beginClose(CloseAbnormal, "write failed", true)
			_ = s.conn.CloseNow()
		}
	}
}

// writeBatch hands frames to the connection as one batch, under one
// deadline.
func (s *Session) writeBatch(batch []Frame) error {
	return s.conn.Write(batch, time.Now().Add(s.opts.WriteTimeout))
}

// writeClose sends the close frame and waits for the handshake (bounded by
// the connection's own timeouts). It runs on the writer goroutine, never on
// the actor.
func (s *Session) writeClose(code int, reason string) {
	if code == CloseAbnormal {
		_ = s.conn.CloseNow()
		return
	}
	_ = s.conn.Close(code, reason)
}
