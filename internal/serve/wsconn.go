package serve

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/transport"
)

// wsConn adapts a coder/websocket connection to transport.Conn. Writes use a
// background context and a deadline on the raw connection instead of a
// per-write context: a context with a deadline arms a timer on every write,
// and an expired one would close the connection behind the session's back.
type wsConn struct {
	ws   *websocket.Conn
	raw  net.Conn
	cork *corkWriter
	cc   *corkedConn // the connection under coder/websocket
	// ndjson: the client negotiated the "ndjson" subprotocol, so the text
	// messages of a batch may share a frame, one per line.
	ndjson bool
	// direct: batches are framed here, not by coder/websocket (frames.go),
	// until its writes stop looking as that needs.
	direct bool
	// hb is the connection's heartbeat, which the client's pings touch;
	// set before the read loop starts.
	hb *heartbeat

	// Set once Close or CloseNow is called: the session has written
	// everything it will write before its close frame (see conn.settle).
	closeMu   sync.Mutex
	closed    bool
	closeWait chan struct{} // made by closing, closed with closed
	// Closed when Close or CloseNow has returned: the close frame, if
	// any, is written (see conn.awaitOwnClose).
	closeDone chan struct{}
	closeOnce sync.Once
	// broken: a write failed, and not because this side closed the
	// connection (conn.run).
	broken atomic.Bool
}

// idle is the frame reader's side of waiting between messages, nil where
// the read loop cannot wait outside Read (see idle.go).
func (c *wsConn) idle() idleReader {
	if c.cc == nil {
		return nil
	}
	return c.cc.idle
}

// errReadUnused is what Read returns: the transport's own read loop (conn.go)
// reads from the WebSocket connection, not the session.
var errReadUnused = errors.New("transport: wsConn.Read is not used; the read loop reads")

// Read is not used: see errReadUnused.
func (c *wsConn) Read(context.Context) (transport.Message, error) {
	return transport.Message{}, errReadUnused
}

// setDeadline sets the write deadline of the raw connection, through the
// cork where there is one (it keeps Close's: corkWriter.closeBy).
func (c *wsConn) setDeadline(t time.Time) {
	if c.cork != nil {
		c.cork.setDeadline(t)
		return
	}
	_ = c.raw.SetWriteDeadline(t)
}

// joinPool holds the buffers that ndjson batches are joined in, so an idle
// connection keeps none.
var joinPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// Write sends msgs under one deadline on the raw connection, corked: the
// frames collect in memory and leave in one system call (two for a batch
// over maxCork). With ndjson, each run of consecutive joinable text
// messages is written as a single text frame, the messages separated by
// '\n': one frame, however many messages were waiting.
func (c *wsConn) Write(msgs []transport.Message, deadline time.Time) (err error) {
	// The deadline is the connection's, so it is cleared afterwards: the
	// pings and pongs coder/websocket writes between batches (bounded by
	// contexts of their own) would otherwise fail once it had passed. The
	// cork sets it only if a write of the batch would wait (corkUntil);
	// one already passed is set at once, and fails the batch.
	lazy := c.cork != nil && c.cork.raw != nil && time.Now().Before(deadline)
	if c.raw != nil && !lazy {
		c.setDeadline(deadline)
		defer c.setDeadline(time.Time{})
	}
	defer func() {
		if err != nil && !c.isClosing() {
			c.broken.Store(true)
		}
	}()
	if c.cork != nil {
		if lazy {
			c.cork.corkUntil(deadline)
		} else {
			c.cork.cork()
		}
		defer func() {
			if e := c.cork.uncorkBatch(); err == nil {
				err = e
			}
			if lazy {
				c.cork.disarm()
			}
		}()
	}
	if c.direct {
		var n int
		n, err = c.cork.frames(msgs, c.ndjson)
		if err != errNotDirect {
			if err != nil && c.cork.closed() {
				// As through coder/websocket: a connection closed
				// under the batch is closed, whatever the write saw.
				err = net.ErrClosed
			}
			return err
		}
		c.direct = false // for good: see frames.go
		msgs = msgs[n:]
	}
	for i := 0; i < len(msgs); {
		m := msgs[i]
		if c.ndjson && joinable(m) && i+1 < len(msgs) && joinable(msgs[i+1]) {
			buf := joinPool.Get().(*bytes.Buffer)
			j := i
			for ; j < len(msgs) && joinable(msgs[j]); j++ {
				if j > i {
					buf.WriteByte('\n')
				}
				buf.Write(msgs[j].Data)
			}
			err = c.ws.Write(context.Background(), websocket.MessageText, buf.Bytes())
			buf.Reset()
			if buf.Cap() <= 1<<20 {
				joinPool.Put(buf)
			}
			i = j
		} else {
			typ := websocket.MessageText
			if m.Binary {
				typ = websocket.MessageBinary
			}
			err = c.ws.Write(context.Background(), typ, m.Data)
			i++
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// joinable reports whether m can share an ndjson frame: a text message
// with no newline of its own (envelopes never have one; raw text sent with
// SendText might, and would split into broken lines).
func joinable(m transport.Message) bool { return !m.Binary && bytes.IndexByte(m.Data, '\n') < 0 }

// closeTimeout bounds writing the close frame, as coder/websocket bounds
// its closing handshake.
const closeTimeout = 5 * time.Second

func (c *wsConn) Close(code int, reason string) error {
	c.markClosing()
	defer c.markClosed()
	if c.raw != nil {
		// The last batch's deadline may have passed long ago.
		c.setDeadline(time.Now().Add(closeTimeout))
	}
	if idle := c.idle(); idle != nil {
		// Close reads the peer's close frame: not while the read loop
		// looks at the frame reader (see lendingReader.ready).
		idle.lockReads()
		defer idle.unlockReads()
	}
	return c.ws.Close(websocket.StatusCode(code), reason)
}

// CloseNow drops the connection. coder/websocket's CloseNow waits for a
// closing handshake in progress (up to its own 5 s timeout) when the peer
// does not answer our close frame; closing the socket first ends that wait
// at once, as a drop must.
func (c *wsConn) CloseNow() error {
	c.markClosing()
	defer c.markClosed()
	if c.cc != nil {
		c.cc.drop()
	} else if c.raw != nil {
		_ = c.raw.Close()
	}
	return c.ws.CloseNow()
}

// markClosing records that the session is closing the connection.
func (c *wsConn) markClosing() {
	c.closeMu.Lock()
	if !c.closed {
		c.closed = true
		if c.closeWait != nil {
			close(c.closeWait)
		}
	}
	c.closeMu.Unlock()
}

// markClosed records that Close or CloseNow has returned.
func (c *wsConn) markClosed() { c.closeOnce.Do(func() { close(c.closeReturned()) }) }

// closeReturned returns the channel markClosed closes.
func (c *wsConn) closeReturned() chan struct{} {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closeDone == nil {
		c.closeDone = make(chan struct{})
	}
	return c.closeDone
}

func (c *wsConn) isClosing() bool {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	return c.closed
}

// closing returns a channel closed once the session closes the connection.
// It is made on demand: only a connection being closed by its client needs
// one.
func (c *wsConn) closing() <-chan struct{} {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	if c.closeWait == nil {
		c.closeWait = make(chan struct{})
		if c.closed {
			close(c.closeWait)
		}
	}
	return c.closeWait
}

// pinged is coder/websocket's OnPingReceived: a client's ping is activity,
// for the idle timeout, as a message is. The pong is sent as usual.
func (c *wsConn) pinged(context.Context, []byte) bool {
	if c.hb != nil {
		c.hb.touch()
	}
	return true
}

var _ transport.Conn = (*wsConn)(nil)

// hijackCapture remembers the net.Conn that coder/websocket hijacks, so the
// session can set write deadlines on it, and slips a corkWriter under the
// bufio.Writer that coder/websocket writes frames to.
type hijackCapture struct {
	http.ResponseWriter
	fallback bool // coder/websocket's reader adoption failed its check (adoption.go)
	conn     net.Conn
	cork     *corkWriter
	cc       *corkedConn
	status   int // the status coder/websocket answered with, if it refused

	// hold: the ResponseWriter is net/http's own, so a 101 is held back
	// (held) for Hijack to write (upgrade.go), within timeout.
	hold, held bool
	timeout    time.Duration
	// hijacked: the connection is coder/websocket's; what it writes to
	// the ResponseWriter after, say the error of a failed 101, goes
	// nowhere (net/http would log each such call).
	hijacked bool
}

func (h *hijackCapture) WriteHeader(code int) {
	if h.hijacked {
		return
	}
	h.status = code
	if h.holdSwitching(code) {
		h.held = true
		return
	}
	h.release()
	h.ResponseWriter.WriteHeader(code)
}

// writeBufferSize is the bufio.Writer coder/websocket frames into. Data
// frames pass through it into the cork buffer, and a payload that does not
// fit is written past it, so it only has to hold a frame header; every
// connection keeps one for its lifetime.
const writeBufferSize = 64

// Hijack hands coder/websocket the connection (a corkedConn) and the
// buffers it frames through.
//
// For reading, newFrameReader's reader, which the idle-read machinery
// (idle.go) looks into between messages; it holds the bytes net/http read
// past the handshake. All of that relies on coder/websocket reading frames
// through the reader returned here, so in fallback (the check in
// adoption.go failed) coder/websocket gets net/http's own reader as it is,
// holding those bytes, and reads through it, or around it, however it
// does: nothing of ours looks at what it buffers.
//
// For writing, a small bufio.Writer over the corkWriter, in both modes.
// That stays safe if coder/websocket does not write through that writer:
// the corkedConn's Write goes to the same corkWriter (corkedConn.Write),
// so whether coder/websocket writes to the bufio.Writer, to the
// connection, or to both, every byte passes through the one corkWriter in
// the order coder/websocket wrote it. Corking then only changes how many
// system calls carry the bytes, never their order, and what a batch held
// back is written at its end or before the connection closes
// (corkedConn.Close). coder/websocket has nothing else to write to: Hijack
// is where it gets the connection.
func (h *hijackCapture) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	held := h.held
	h.held = false
	c, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		// Nothing was written, a held 101 neither: the caller answers.
		return c, brw, err
	}
	h.hijacked = true
	raw := newRawWriter(c)
	if held {
		if err := h.writeSwitching(c, raw, brw.Writer); err != nil {
			_ = c.Close()
			return nil, nil, err
		}
	}
	h.conn = c
	h.cork = &corkWriter{conn: c, raw: raw}
	cc := &corkedConn{Conn: c, cork: h.cork}
	h.cc = cc
	bw := bufio.NewWriterSize(h.cork, writeBufferSize)
	if h.fallback {
		// Nothing says which bytes coder/websocket reads through cc:
		// no frame is held back (see closegate.go).
		cc.gate.through = true
		return cc, bufio.NewReadWriter(brw.Reader, bw), nil
	}
	return cc, bufio.NewReadWriter(newFrameReader(brw.Reader, cc), bw), nil
}

// corkedConn is the connection coder/websocket sees. When it closes the
// connection right after writing a close frame (it does so on receiving the
// peer's close), the frame may still sit in the cork buffer: Close sends
// what is buffered first. Writes go through the cork too, like those to the
// bufio.Writer Hijack returns (see Hijack). Reads go through in, when set
// (see newFrameReader).
type corkedConn struct {
	net.Conn
	cork *corkWriter
	in   io.Reader
	gate frameGate       // holds back a frame that ends the connection (closegate.go)
	idle idleReader      // the read loop's shallow wait, where supported
	rc   syscall.RawConn // the socket, where the poller can hold it

	// owner is the connection whose read loop reads here, once it runs:
	// Close resumes it if it is parked in the poller.
	owner atomic.Pointer[conn]
}

func (c *corkedConn) Read(p []byte) (int, error) {
	return c.gate.read(p, (*source)(c), c.settle)
}

// settle is the gate's call before a frame that ends the connection: the
// read loop's connection settles (conn.settle), once there is one.
func (c *corkedConn) settle(code int, reason string) {
	if o := c.owner.Load(); o != nil {
		o.settle(code, reason)
	}
}

// source is what the gate reads: in, or the connection itself.
type source corkedConn

func (s *source) Read(p []byte) (int, error) {
	if s.in != nil {
		return s.in.Read(p)
	}
	return s.Conn.Read(p)
}

func (c *corkedConn) Write(p []byte) (int, error) { return c.cork.Write(p) }

// drop closes the socket without sending what is corked.
func (c *corkedConn) drop() {
	if o := c.owner.Load(); o != nil {
		o.h.poll.unpark(o)
	}
	_ = c.Conn.Close() // first: it ends a write stuck on the socket, which holds the cork
	c.cork.close()
}

func (c *corkedConn) Close() error {
	if o := c.owner.Load(); o != nil {
		o.h.poll.unpark(o) // a closed socket leaves epoll without a word
	}
	c.cork.closeBy(time.Now().Add(time.Second))
	_ = c.cork.uncork()
	c.cork.close()
	return c.Conn.Close()
}

// readBufferSize is the bufio.Reader frames are read through. Payloads
// larger than it are read straight into the message buffer, so it only
// decides how many small frames one read(2) can fetch; net/http's 4 KiB
// buffer would be most of an idle connection's memory.
const readBufferSize = 1024

// smallReader replaces net/http's read buffer with a smaller one holding
// the same unread bytes (a client may have sent its first frame right
// behind the handshake). It is what connections that newFrameReader cannot
// lend buffers to read through.
func smallReader(br *bufio.Reader, c *corkedConn) *bufio.Reader {
	n := br.Buffered()
	if n > readBufferSize {
		// coder/websocket reads net/http's reader, around c and its
		// gate: nothing is held back for it.
		c.gate.through = true
		return br
	}
	left, _ := br.Peek(n)
	// The unread bytes go under c, so that the gate sees every frame
	// from the first.
	c.in = io.MultiReader(bytes.NewReader(bytes.Clone(left)), c.Conn)
	r := bufio.NewReaderSize(c, readBufferSize)
	if n > 0 {
		// Pull the unread bytes into r's buffer, where coder/websocket
		// looks for them before it reads from the connection itself.
		_, _ = r.Peek(n)
	}
	return r
}

func (h *hijackCapture) Unwrap() http.ResponseWriter { return h.ResponseWriter }
