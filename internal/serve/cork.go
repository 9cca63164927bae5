package serve

import (
	"net"
	"sync"
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
	mu     sync.Mutex
	conn   net.Conn
	corked bool
	buf    *[]byte
}

// maxCork bounds the bytes held back; past it the buffer is written out
// mid-batch.
const maxCork = 64 << 10

var corkPool = sync.Pool{New: func() any { b := make([]byte, 0, 16<<10); return &b }}

func (w *corkWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.corked {
		return w.conn.Write(p)
	}
	b := *w.buf
	if len(b)+len(p) > maxCork && len(b) > 0 {
		if _, err := w.conn.Write(b); err != nil {
			return 0, err
		}
		b = b[:0]
	}
	if len(p) > maxCork {
		*w.buf = b
		return w.conn.Write(p)
	}
	*w.buf = append(b, p...)
	return len(p), nil
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
	defer w.mu.Unlock()
	w.corked = false
	if w.buf == nil {
		return nil
	}
	var err error
	if b := *w.buf; len(b) > 0 {
		_, err = w.conn.Write(b)
	}
	*w.buf = (*w.buf)[:0]
	if cap(*w.buf) <= 4*maxCork {
		corkPool.Put(w.buf)
	}
	w.buf = nil
	return err
}
