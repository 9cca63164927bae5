package session

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"
)

// batchPool holds the buffers that coalesced batches are joined in, so an
// idle session keeps none.
var batchPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

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

// writeBatch writes frames under one deadline. With Coalesce, consecutive
// joinable text frames are joined with '\n' into a single frame: one write, one system
// call, however many messages were waiting.
func (s *Session) writeBatch(batch []Frame) (err error) {
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	if b, ok := s.conn.(Batcher); ok {
		b.BeginBatch()
		defer func() {
			if e := b.EndBatch(); err == nil {
				err = e
			}
		}()
	}
	for i := 0; i < len(batch); {
		f := batch[i]
		if s.opts.Coalesce && joinable(f) && i+1 < len(batch) && joinable(batch[i+1]) {
			buf := batchPool.Get().(*bytes.Buffer)
			j := i
			for ; j < len(batch) && joinable(batch[j]); j++ {
				if j > i {
					buf.WriteByte('\n')
				}
				buf.Write(batch[j].Data)
			}
			err = s.conn.Write(false, buf.Bytes())
			buf.Reset()
			if buf.Cap() <= 1<<20 {
				batchPool.Put(buf)
			}
			i = j
		} else {
			err = s.conn.Write(f.Binary, f.Data)
			i++
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// joinable reports whether f can share a coalesced frame: a text message
// with no newline of its own (envelopes never have one; raw text sent with
// SendText might, and would split into broken lines).
func joinable(f Frame) bool { return !f.Binary && bytes.IndexByte(f.Data, '\n') < 0 }

// writeClose sends the close frame and waits for the handshake (bounded by
// the connection's own timeouts). It runs on the writer goroutine, never on
// the actor.
func (s *Session) writeClose(code int, reason string) {
	if code == CloseAbnormal {
		_ = s.conn.CloseNow()
		return
	}
	_ = s.conn.SetWriteDeadline(time.Now().Add(s.opts.WriteTimeout))
	_ = s.conn.Close(code, reason)
}
