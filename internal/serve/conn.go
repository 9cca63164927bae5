package serve

import (
	"context"
	"errors"
	"io"
	"math"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/session"
	"golang.org/x/time/rate"
)

// conn is one connection's state, shared by its read loop and by the worker
// that runs its callbacks.
//
// The read loop only reads: coder/websocket needs a reader parked in Read
// at all times (for pings, pongs and the close handshake), so that
// goroutine lives as long as the connection. Goroutine stacks grow and only
// shrink at a garbage collection, which an idle server does not run; if the
// read loop ran the handlers, every idle connection would keep the stack
// its deepest handler needed. So the callbacks (OnOpen, OnFrame, OnClose)
// run on a worker from the handler's pool instead, taken only while the
// connection has messages waiting, and the read loop keeps the small stack
// that a parked Read needs.
type conn struct {
	h  *Handler
	s  *session.Session
	ws *wsConn
	hb heartbeat

	// Read loop only.
	limit  *rate.Limiter // made on the first message; nil without a rate limit
	over   int           // strikes: refusals not yet paid back by accepted messages
	moveOn bool          // the next wait for the client leaves this goroutine
	waits  uint8         // waits so far, up to earlyWaits

	// unseen counts the messages read since the heartbeat was last told
	// (see touchEvery; heartbeat.lazy says whether it is told of each).
	unseen int

	token      uint64    // the poller's name for this connection; 0 until parked
	registered bool      // the socket is in the poller's epoll set
	parkedAt   time.Time // when it last stopped waiting on a goroutine of its own

	mu     sync.Mutex
	wake   sync.Cond     // the read loop waits here: for room in the queue, or for OnOpen
	in     *inbox        // messages read and not yet handled; borrowed only while not empty
	busy   bool          // a worker owns the connection's callbacks
	opened bool          // OnOpen has returned
	openOK bool          // ... without panicking
	idle   chan struct{} // made by settle, closed when busy is next cleared

	// ended, when set, is closed once the session has ended (its OnClose
	// returned), for ServeConn's caller.
	ended chan struct{}

	// Set by the read loop before it queues itemEnd.
	endCode   int
	endReason string
}

// item kinds: what the read loop asks the worker to do.
const (
	itemText        = iota // OnFrame, text
	itemBinary             // OnFrame, binary
	itemOpen               // OnOpen
	itemRateLimited        // over the rate limit: answer "rate_limited"
	itemRateClose          // over the rate limit too often: close 1008
	itemBadUTF8            // invalid text: close 1007
	itemEnd                // the connection is gone: OnClose, then forget it
)

type item struct {
	data []byte
	kind uint8
}

// Bounds of the inbound queue. When it is full the read loop stops reading,
// so a client that sends faster than its handlers run is held back by TCP,
// as it would be if the read loop ran the handlers itself; the queue only
// lets reading overlap with handling. A single message may exceed
// inboxBytes (up to MaxMessageSize) when nothing else is queued.
const (
	inboxLen   = 8
	inboxBytes = 64 << 10
)

// inbox is a connection's inbound queue, a ring taken from a pool while it
// holds anything: an idle connection keeps none.
type inbox struct {
	items   [inboxLen]item
	head, n int
	bytes   int
}

var inboxPool = sync.Pool{New: func() any { return new(inbox) }}

func (q *inbox) push(it item) {
	q.items[(q.head+q.n)%inboxLen] = it
	q.n++
	q.bytes += len(it.data)
}

func (q *inbox) pop() item {
	it := q.items[q.head]
	q.items[q.head] = item{}
	q.head = (q.head + 1) % inboxLen
	q.n--
	q.bytes -= len(it.data)
	return it
}

// full reports whether a message of size n must wait for room.
func (q *inbox) full(n int) bool {
	return q.n == inboxLen || (q.n > 0 && q.bytes+n > inboxBytes)
}

func newConn(h *Handler, s *session.Session, ws *wsConn) *conn {
	c := &conn{h: h, s: s, ws: ws, moveOn: true}
	c.wake.L = &c.mu
	if ws != nil {
		ws.hb = &c.hb
		if ws.cc != nil {
			ws.cc.owner.Store(c)
		}
	}
	c.hb.start(&h.cfg, ws, s)
	return c
}

// push queues it for the worker, waiting for room first, and hands the
// connection to a worker if none has it.
func (c *conn) push(it item) {
	c.mu.Lock()
	if c.in != nil && c.in.full(len(it.data)) && c.unseen > 0 {
		// The read loop is about to wait for the worker, maybe long:
		// what it read has arrived (see touchEvery).
		c.hb.touch()
		c.unseen = 0
	}
	for c.in != nil && c.in.full(len(it.data)) {
		c.wake.Wait()
	}
	if c.in == nil {
		c.in = inboxPool.Get().(*inbox)
	}
	c.in.push(it)
	start := !c.busy
	c.busy = true
	c.mu.Unlock()
	if start {
		c.h.dispatch(c)
	}
}

// next takes the next item for the worker; ok is false when the queue is
// empty, and the connection is then no longer the worker's.
func (c *conn) next() (it item, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.in == nil || c.in.n == 0 {
		if c.in != nil {
			inboxPool.Put(c.in)
			c.in = nil
		}
		c.busy = false
		if c.idle != nil {
			close(c.idle) // settle is waiting
			c.idle = nil
		}
		return item{}, false
	}
	it = c.in.pop()
	c.wake.Signal()
	return it, true
}

// readLoop reads until the connection ends, then has the worker finish the
// session. It runs no user code.
func (c *conn) readLoop() {
	h, ws := c.h, c.ws.ws
	h.stats.opened(TransportWebSocket)
	if h.hooks.OnOpen != nil && !c.open() {
		reason := "open handler failed"
		_ = ws.Close(websocket.StatusInternalError, reason)
		c.end(session.CloseInternalError, reason)
		return
	}
	c.read()
}

// read reads messages until the connection ends. Between messages it waits
// for the client outside coder/websocket's Read, and when the connection
// looks idle it does so on a new goroutine, which goes on reading, and this
// one ends (see idle.go).
func (c *conn) read() {
	h, ws := c.h, c.ws.ws
	idle := c.ws.idle()
	c.hb.lazy.Store(idle != nil)
	for {
		if idle != nil && !idle.ready() {
			now := time.Now()
			if c.unseen > 0 {
				// What was read has arrived by now.
				c.hb.touchAt(now)
				c.unseen = 0
			}
			c.hb.between.Store(true) // until waitSince returns
			if c.moveOn {
				if !c.h.poll.park(c) {
					c.parkedAt = now
					go c.resume() // waits on a fresh goroutine's small stack
				}
				return
			}
			c.waitSince(now)
		}
		if idle != nil && directReading {
			if bin, data, ok := idle.take(h.cfg.MaxMessageSize); ok {
				c.received(bin, data)
				continue
			}
		}
		typ, data, err := readMessage(ws, h.cfg.MaxMessageSize)
		if err == nil && idle != nil && idle.takeFake() {
			continue
		}
		if errors.Is(err, errTooBig) {
			// Close with 1009 and wait for the client's close frame,
			// discarding the rest of the message on the way, so that the
			// client reads the close frame instead of a connection reset.
			reason := "message too big"
			_ = ws.Close(websocket.StatusMessageTooBig, reason)
			c.end(session.CloseMessageTooBig, reason)
			return
		}
		if err != nil {
			c.awaitOwnClose()
			code, reason := closeStatus(err)
			c.end(code, reason)
			return
		}
		c.received(typ == websocket.MessageBinary, data)
	}
}

// received handles one message read from the client, whatever the
// transport: it counts it and queues it for the worker, or its refusal
// (rate limit, invalid UTF-8).
func (c *conn) received(binary bool, data []byte) {
	h := c.h
	if !c.hb.lazy.Load() || c.unseen == 0 || c.unseen >= touchEvery || c.hb.probe.Load() {
		c.hb.touch()
		c.unseen = 0
	}
	c.unseen++
	h.stats.MessagesIn.Add(1)
	h.stats.BytesIn.Add(uint64(len(data)))
	if c.closedHere() {
		// Closing (by this side: 1007, 1008, Close): what the client
		// sends meanwhile is read, for the handshake's sake, and
		// dropped.
		return
	}
	kind := uint8(itemText)
	if binary {
		kind = itemBinary
	}
	if h.cfg.RateLimit > 0 {
		if c.limit == nil {
			c.limit = rate.NewLimiter(rate.Limit(h.cfg.RateLimit), h.cfg.RateBurst)
		}
		if !c.limit.Allow() {
			h.stats.RateLimited.Add(1)
			kind = itemRateLimited
			if c.over++; c.over > h.cfg.RateBurst {
				kind = itemRateClose
			}
			c.push(item{kind: kind})
			return
		}
		// A refusal costs a strike, an accepted message pays one
		// back: a client well over the limit runs out of strikes and
		// is closed, one that only touches it is not.
		c.over = max(c.over-1, 0)
	}
	if kind == itemText && !utf8.Valid(data) {
		// RFC 6455 8.1: a text message must be UTF-8.
		c.push(item{kind: itemBadUTF8})
		return
	}
	if h.hooks.OnFrame != nil {
		c.push(item{data: data, kind: kind})
	}
}

// errTooBig is readMessage's answer to a message over the size limit.
var errTooBig = errors.New("message too big")

// readLimit is the read limit given to coder/websocket: above
// MaxMessageSize, so that its own limit never trips (readMessage stops
// first) and what a message over MaxMessageSize gets, a close with 1009
// that OnClose reports, is decided here.
func readLimit(maxSize int64) int64 {
	if maxSize >= math.MaxInt64-1 {
		return -1 // no limit: nothing that large can arrive anyway
	}
	return maxSize + 1
}

// readMessage reads the next message whole, if it is at most maxSize bytes;
// a larger one is read no further than maxSize+1 bytes and reported as
// errTooBig.
//
// A message is first read into a pooled scratch buffer and copied out at
// its size: most messages are small, and a buffer made for each one at a
// guess (512 bytes) was most of what reading allocated.
func readMessage(ws *websocket.Conn, maxSize int64) (websocket.MessageType, []byte, error) {
	typ, r, err := ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	sp := scratchPool.Get().(*[scratchSize]byte)
	b, done, err := readInto(r, sp[:0], maxSize, false)
	if done || err != nil {
		if err == nil {
			b = append(make([]byte, 0, len(b)), b...)
		}
		scratchPool.Put(sp)
		return typ, b, err
	}
	// Larger than the scratch buffer: on in a buffer of its own.
	b = append(make([]byte, 0, 2*scratchSize), b...)
	scratchPool.Put(sp)
	b, _, err = readInto(r, b, maxSize, true)
	return typ, b, err
}

// scratchSize is the size of readMessage's scratch buffers.
const scratchSize = 512

var scratchPool = sync.Pool{New: func() any { return new([scratchSize]byte) }}

// readInto reads the rest of a message into b, growing it if grow is set;
// else it stops when b is full, with done false. done is true when the
// message ended.
func readInto(r io.Reader, b []byte, maxSize int64, grow bool) (_ []byte, done bool, _ error) {
	for {
		if len(b) == cap(b) {
			if !grow {
				return b, false, nil
			}
			b = append(b, 0)[:len(b)] // grow
		}
		room := b[len(b):cap(b)]
		if rest := maxSize - int64(len(b)); int64(len(room)) > rest {
			room = room[:rest+1] // one byte over the limit at most
		}
		n, err := r.Read(room)
		b = b[:len(b)+n]
		if int64(len(b)) > maxSize {
			return nil, false, errTooBig
		}
		if err == io.EOF {
			return b, true, nil
		}
		if err != nil {
			return nil, false, err
		}
	}
}

// resume waits for the client, then reads: on a pooled goroutine once the
// poller saw the client send (or the connection close), where the wait
// returns at once; on a goroutine of its own where the poller cannot hold
// the connection.
func (c *conn) resume() {
	c.waitSince(c.parkedAt)
	c.read()
}

// touchEvery: the heartbeat is told of the client's messages at the first
// one after a wait, then every touchEvery while the read loop reads without
// waiting, not at each one (a clock read per message was 2 % of an echo
// server's time); before it waits again, for the client or for room in the
// inbound queue, it tells it once more. A client whose frames keep arriving
// in pieces may have the read loop waiting inside a message, never between
// two: the heartbeat then finds the connection idle while its read loop is
// not waiting between messages, and before closing it asks to be told of
// the next message at once (heartbeat.probe).
const touchEvery = 32

// longWait is how long a wait for the client makes the read loop move to a
// fresh goroutine the next time it waits: a connection that pauses that
// long is idle more than busy (see idle.go).
const longWait = 100 * time.Millisecond

// earlyWaits is how many of a connection's first waits move the read loop
// whatever their length: a client that joins a room and then sits idle
// sent its first messages quickly.
const earlyWaits = 8

// waitSince waits for the client, of a connection idle since start, and
// notes whether the next wait should move.
func (c *conn) waitSince(start time.Time) {
	c.ws.idle().wait()
	c.hb.between.Store(false)
	now := time.Now() // not a touch: what woke it may be a pong
	if c.waits < earlyWaits {
		c.waits++
	}
	c.moveOn = c.waits < earlyWaits || now.Sub(start) >= longWait
}

// open has a worker run OnOpen and waits for it: no message is read before
// OnOpen has returned. It reports whether OnOpen returned normally.
func (c *conn) open() bool {
	c.push(item{kind: itemOpen})
	c.mu.Lock()
	defer c.mu.Unlock()
	for !c.opened {
		c.wake.Wait()
	}
	return c.openOK
}

// awaitOwnClose waits, when this side is closing the connection, until its
// close frame is written (bounded as settle is). The read loop can fail
// while the writer is still writing it: after settle, coder/websocket reads
// the frame that ends the connection (an unmasked frame, say) and reports
// it without waiting for our close; ending the session then (end, Finish)
// drops the socket, and the close frame, half written, never reaches the
// client.
func (c *conn) awaitOwnClose() {
	if !c.ws.isClosing() {
		return
	}
	t := time.NewTimer(c.settleTimeout())
	defer t.Stop()
	select {
	case <-c.ws.closeReturned():
	case <-t.C:
	}
}

// end queues the session's end behind the messages still waiting.
func (c *conn) end(code int, reason string) {
	c.endCode, c.endReason = code, reason
	c.push(item{kind: itemEnd})
}

// closedHere reports whether this side has begun closing the session
// (Close, 1007, 1008, shutdown, a drop): the messages read then, and those
// still queued, are dropped. A session closing because its connection broke
// under a write (the client is gone) is not: what the client sent before
// is handled, as it would be after the client's close.
func (c *conn) closedHere() bool {
	return !c.s.IsOpen() && (c.ws == nil || !c.ws.broken.Load())
}

// run handles the connection's queued items, in order, on a worker. It
// returns when the queue is empty.
func (c *conn) run() {
	h, s := c.h, c.s
	for {
		it, ok := c.next()
		if !ok {
			return
		}
		switch it.kind {
		case itemOpen:
			h.enter()
			ok := h.call(s, func() { h.hooks.OnOpen(s) })
			h.leave()
			c.mu.Lock()
			c.opened, c.openOK = true, ok
			c.wake.Signal()
			c.mu.Unlock()
		case itemEnd:
			c.hb.stop()
			session.Finish(s, c.endCode, c.endReason)
			h.stats.closed(s.CloseCode())
			h.done()
			if c.ended != nil {
				close(c.ended)
			}
			// Nothing follows itemEnd: the next call to next returns
			// the queue to its pool.
		default:
			if c.closedHere() {
				continue // closed since it was read: dropped, as above
			}
			switch it.kind {
			case itemRateLimited:
				if h.hooks.OnRateLimited != nil {
					// Before the send: the client may read the answer
					// before SendText returns.
					h.enter()
					h.hooks.OnRateLimited(s)
					h.leave()
				}
				_ = s.SendText(rateLimited)
			case itemRateClose:
				_ = s.CloseWith(session.ClosePolicyViolation, "rate limit exceeded")
			case itemBadUTF8:
				_ = s.CloseWith(session.CloseInvalidData, "text message is not valid UTF-8")
			default:
				h.enter()
				h.frame(s, it.kind == itemBinary, it.data)
				h.leave()
			}
		}
	}
}
