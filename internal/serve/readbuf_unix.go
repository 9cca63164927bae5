//go:build unix

package serve

import (
	"bufio"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"syscall"
)

// lendingReader reads a connection through a buffer borrowed from a pool
// only while it holds bytes not yet consumed. The read loop of an idle
// connection waits for the socket to become readable with no buffer at all,
// where a bufio.Reader would keep its own for the connection's lifetime:
// coder/websocket then reads through a minimal bufio.Reader (16 bytes) on
// top of this one. A read of a whole buffer or more skips the buffer.
//
// Read is only called from the goroutine that holds coder/websocket's read
// lock, like the bufio.Reader above it. ready, wait and take are the read
// loop's, outside Read: they touch the buffers only under gate, which
// Close, the other goroutine that reads, holds while it reads.
type lendingReader struct {
	rc   syscall.RawConn
	buf  *[]byte // borrowed; nil when empty
	r, w int

	// The raw read's arguments and results: read is a method value made
	// once, so waiting for the socket allocates nothing.
	read func(fd uintptr) bool
	dst  []byte
	n    int
	err  error

	// Waiting between messages (ready and wait, see idle.go).
	gate   sync.Mutex            // held by Close, which reads (see lockReads)
	br     *bufio.Reader         // the reader coder/websocket reads through
	waitFn func(fd uintptr) bool // waitRaw
	held   error                 // what waitRaw's read(2) failed with, for Read
	before int                   // bytes to serve before the empty message; 0: none planned
	fake   []byte                // what is left of the empty message to serve
	faked  bool                  // the empty message was served; the read loop drops it

	fg *frameGate // the gate coder/websocket reads through, above br's source (direct.go)
}

// lendBufferSize is the size of the borrowed buffers: how much one read(2)
// can fetch for the frames of a busy connection.
const lendBufferSize = 4096

var lendPool = sync.Pool{New: func() any { b := make([]byte, lendBufferSize); return &b }}

// newFrameReader returns the reader coder/websocket reads frames through.
// coder/websocket rebuilds it on top of the connection Hijack returned (cc)
// after re-reading what it holds, so the lending reader goes under cc, and
// it also holds the bytes net/http had read past the handshake (a client
// may send its first frame right behind it).
func newFrameReader(br *bufio.Reader, cc *corkedConn) *bufio.Reader {
	rc := socketOf(cc.Conn)
	if rc == nil || br.Buffered() > lendBufferSize {
		return smallReader(br, cc)
	}
	l := &lendingReader{rc: rc}
	l.read = l.readRaw
	l.waitFn = l.waitRaw
	if n := br.Buffered(); n > 0 {
		left, _ := br.Peek(n)
		l.buf = lendPool.Get().(*[]byte)
		l.w = copy(*l.buf, left)
	}
	cc.in = l
	cc.idle = l
	l.fg = &cc.gate
	cc.rc = rc
	l.br = bufio.NewReaderSize(cc, 16)
	return l.br
}

func (l *lendingReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if l.fake != nil {
		n := copy(p, l.fake)
		l.fake = l.fake[n:]
		if len(l.fake) == 0 {
			l.fake, l.faked = nil, true
		}
		return n, nil
	}
	if l.before == 0 {
		return l.readSome(p)
	}
	if len(p) > l.before {
		p = p[:l.before]
	}
	n, err := l.readSome(p)
	if l.before -= n; l.before == 0 {
		l.fake = emptyMessage[:]
	}
	return n, err
}

// readSome serves p from the borrowed buffer, or from the socket.
func (l *lendingReader) readSome(p []byte) (int, error) {
	if l.buf == nil && l.held != nil {
		err := l.held
		l.held = nil
		return 0, err
	}
	if l.buf == nil {
		// Straight into p when it is as large as a buffer; otherwise
		// into a borrowed buffer, taken only once bytes are there.
		if len(p) >= lendBufferSize {
			l.dst = p
		}
		n, err := l.fill()
		l.dst = nil
		if err != nil || len(p) >= lendBufferSize {
			return n, err
		}
		l.r, l.w = 0, n
	}
	n := copy(p, (*l.buf)[l.r:l.w])
	l.r += n
	if l.r == l.w {
		lendPool.Put(l.buf)
		l.buf, l.r, l.w = nil, 0, 0
	}
	return n, nil
}

// fill waits until the socket is readable and reads once, into l.dst if
// set, else into a buffer it borrows (l.buf).
func (l *lendingReader) fill() (int, error) {
	l.n, l.err = 0, nil
	if err := l.rc.Read(l.read); err != nil {
		return 0, err
	}
	if l.err != nil {
		err := l.err
		l.err = nil
		return 0, err
	}
	if l.n == 0 {
		return 0, io.EOF
	}
	return l.n, nil
}

// readRaw is the non-blocking read(2) that RawConn.Read retries each time
// the socket becomes readable. The buffer is borrowed for the attempt and
// given back if there was nothing to read, so a connection waiting for its
// client holds none.
func (l *lendingReader) readRaw(fd uintptr) bool {
	dst := l.dst
	var b *[]byte
	if dst == nil {
		b = lendPool.Get().(*[]byte)
		dst = *b
	}
	for {
		n, err := syscall.Read(int(fd), dst)
		if err == syscall.EINTR {
			continue
		}
		if err == syscall.EAGAIN {
			if b != nil {
				lendPool.Put(b)
			}
			return false // wait until readable, then again
		}
		if err != nil {
			l.err = &net.OpError{Op: "read", Net: "tcp", Err: err}
			n = 0
		}
		if b != nil {
			if n > 0 {
				l.buf = b
			} else {
				lendPool.Put(b)
			}
		}
		l.n = n
		return true
	}
}

// ready reports whether bytes are buffered, so that a Read would not wait.
// If not, the read loop calls wait (see idle.go).
//
// The read loop is not the only reader: coder/websocket's Close reads the
// peer's close frame itself, on the closing goroutine, while the read loop
// may be outside Read, here or in wait. Close holds the gate (lockReads),
// so the read loop looks at the buffers, or fills them in wait, only while
// Close is not reading; while it is, ready reports true and the read loop's
// Read waits for coder/websocket's read lock instead.
func (l *lendingReader) ready() bool {
	if !l.gate.TryLock() {
		return true
	}
	busy := l.buf != nil || l.br.Buffered() > 0 || l.fake != nil || l.before > 0 || l.held != nil
	l.gate.Unlock()
	return busy
}

// wait returns once the socket had bytes (now buffered) or failed.
func (l *lendingReader) wait() {
	if err := l.rc.Read(l.waitFn); err != nil && l.gate.TryLock() {
		if l.buf == nil && l.held == nil {
			l.held = err
		}
		l.gate.Unlock()
	}
}

// waitRaw is what RawConn.Read retries each time the socket becomes
// readable, for wait: readRaw into a borrowed buffer, and when what it read
// starts with whole control frames, the plan of the empty message after
// them (see idle.go). The bytes start at a message boundary: the read loop
// only waits between messages, with nothing buffered.
func (l *lendingReader) waitRaw(fd uintptr) bool {
	if !l.gate.TryLock() {
		return true // Close is reading; the read loop's Read waits for it
	}
	defer l.gate.Unlock()
	if l.buf != nil || l.held != nil {
		return true
	}
	l.n, l.err = 0, nil
	if !l.readRaw(fd) {
		return false
	}
	switch {
	case l.err != nil:
		l.held, l.err = l.err, nil
	case l.n == 0:
		l.held = io.EOF
	default:
		l.r, l.w = 0, l.n
		l.before = controlPrefix((*l.buf)[:l.n])
	}
	return true
}

// take returns the next message when direct reading may take it from the
// buffer (direct.go); ok is false when the read loop must read it through
// coder/websocket.
func (l *lendingReader) take(maxSize int64) (bin bool, data []byte, ok bool) {
	if !l.gate.TryLock() {
		return false, nil, false // Close is reading
	}
	defer l.gate.Unlock()
	if l.buf == nil || l.before > 0 || l.fake != nil || l.held != nil || l.br.Buffered() > 0 || !l.fg.atBoundary() {
		return false, nil, false
	}
	b := (*l.buf)[l.r:l.w]
	hl, n, bin, ok := wholeFrame(b, maxSize)
	if !ok {
		return false, nil, false
	}
	data = make([]byte, n)
	unmaskInto(data, b[hl:hl+int(n)], binary.LittleEndian.Uint32(b[hl-4:hl]))
	l.r += hl + int(n)
	if l.r == l.w {
		lendPool.Put(l.buf)
		l.buf, l.r, l.w = nil, 0, 0
	}
	return bin, data, true
}

func (l *lendingReader) takeFake() bool {
	f := l.faked
	l.faked = false
	return f
}

func (l *lendingReader) lockReads()   { l.gate.Lock() }
func (l *lendingReader) unlockReads() { l.gate.Unlock() }
