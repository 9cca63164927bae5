package serve

import (
	"encoding/binary"
	"io"
	"time"
	"unicode/utf8"

	"github.com/troupehq/troupe/internal/session"
)

// What the client sent before its close is answered before the close.
//
// coder/websocket answers the peer's close frame inside Read: it writes its
// own close frame and closes the connection at once. A protocol error (a
// reserved bit, a continuation frame where none belongs, ...) found inside
// Read makes it write a close frame (1002) too. After a close frame nothing
// may be written, so the replies to the messages read just before (a
// client's last message and its close often share one TCP write) would be
// refused, and their handlers would find the session closing.
//
// So coder/websocket never sees such a frame before we are done with what
// came before it. The frames it reads pass through a frameGate, which
// follows them (headers only; payloads pass untouched), and when the next
// frame is one that ends the connection it holds it back and has the
// connection settle first (conn.settle): every message read so far is
// handled, the session is closed with the client's code (or 1002), which
// writes the replies those handlers queued and then our close frame, and
// only then does coder/websocket read the frame, finding our close frame
// sent. The rule, then: every message the client sent before its close
// frame or a protocol error is handed to its handler, and every reply queued
// before the session began closing is written before the close frame.

// maxHeader is the longest frame header: 2 bytes, 8 of length, 4 of mask.
const maxHeader = 14

// frameGate sits under coder/websocket's frame reader (corkedConn.Read). It
// is only used from the goroutine that holds coder/websocket's read lock.
type frameGate struct {
	hdr     [maxHeader]byte
	n, off  uint8  // header bytes read, and served of them
	inMsg   bool   // a fragmented message is under way
	through bool   // past the frame that ends the connection: bytes pass as they come
	left    int64  // payload bytes of the current frame not served yet
	held    []byte // the closing frame, read whole, not served yet
}

// read serves p from src, stopping at frame boundaries to look at the next
// header, and, before a frame that ends the connection, calling settle.
func (g *frameGate) read(p []byte, src io.Reader, settle func(code int, reason string)) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if len(g.held) > 0 {
		n := copy(p, g.held)
		g.held = g.held[n:]
		return n, nil
	}
	if g.off < g.n {
		n := copy(p, g.hdr[g.off:g.n])
		g.off += uint8(n)
		return n, nil
	}
	if g.through {
		return src.Read(p)
	}
	if g.left > 0 {
		if int64(len(p)) > g.left {
			p = p[:g.left]
		}
		n, err := src.Read(p)
		g.left -= int64(n)
		return n, err
	}

	// A frame boundary: read the next header before coder/websocket does.
	g.n, g.off = 0, 0
	need := 2
	for int(g.n) < need {
		k, err := src.Read(g.hdr[g.n:need])
		g.n += uint8(k)
		if g.n >= 2 {
			need = headerLen(g.hdr[0], g.hdr[1])
		}
		if err != nil {
			if g.n == 0 {
				return 0, err
			}
			// Serve what came; coder/websocket gets the error from
			// the next read.
			g.through = true
			return g.serveHeader(p), nil
		}
	}
	h0, h1 := g.hdr[0], g.hdr[1]
	op := h0 & 0x0f
	length := payloadLen(g.hdr[:g.n])
	reason := badFrame(h0, h1, length, g.inMsg)
	if reason == "" && op != 0x8 {
		if op <= 0x2 {
			g.inMsg = h0&0x80 == 0
		}
		g.left = length
		return g.serveHeader(p), nil
	}

	// The frame ends the connection.
	g.through = true
	code := session.CloseProtocolError
	if reason == "" {
		// The client's close: read it whole, for its code and reason.
		hl := int(g.n)
		frame := make([]byte, hl+int(length))
		copy(frame, g.hdr[:hl])
		k, err := io.ReadFull(src, frame[hl:])
		g.n, g.off = 0, 0
		g.held = frame[:hl+k]
		if err != nil {
			return g.read(p, src, settle) // cut short: coder/websocket sees the end
		}
		code, reason = closePayload(frame[hl:], frame[hl-4:hl])
	}
	if settle != nil {
		settle(code, reason)
	}
	return g.read(p, src, settle)
}

func (g *frameGate) serveHeader(p []byte) int {
	n := copy(p, g.hdr[:g.n])
	g.off = uint8(n)
	return n
}

// headerLen is the length of a client frame's header, from its first two
// bytes.
func headerLen(h0, h1 byte) int {
	n := 2
	switch h1 & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h1&0x80 != 0 {
		n += 4
	}
	return n
}

// payloadLen is the payload length a whole header gives, or -1 for one
// that does not fit an int64.
func payloadLen(h []byte) int64 {
	switch n := h[1] & 0x7f; n {
	case 126:
		return int64(binary.BigEndian.Uint16(h[2:4]))
	case 127:
		v := binary.BigEndian.Uint64(h[2:10])
		if v > 1<<63-1 {
			return -1
		}
		return int64(v)
	default:
		return int64(n)
	}
}

// badFrame says what is wrong with a client frame whose header starts with
// h0 and h1, where coder/websocket (with compression off, as we accept)
// would fail the connection; "" if nothing is.
func badFrame(h0, h1 byte, length int64, inMsg bool) string {
	op := h0 & 0x0f
	switch {
	case h0&0x70 != 0:
		return "reserved bits set"
	case h1&0x80 == 0:
		return "unmasked frame"
	case length < 0:
		return "bad payload length"
	case op >= 0x3 && op <= 0x7 || op >= 0xb:
		return "unknown opcode"
	case op >= 0x8 && (h0&0x80 == 0 || length > 125):
		return "bad control frame"
	case op == 0x0 && !inMsg:
		return "continuation frame without a message"
	case (op == 0x1 || op == 0x2) && inMsg:
		return "new message inside a fragmented one"
	}
	return ""
}

// closePayload reads a close frame's masked payload as coder/websocket does:
// no payload is 1005, and a payload it would refuse is a protocol error.
func closePayload(masked, key []byte) (int, string) {
	if len(masked) == 0 {
		return session.CloseNoStatus, ""
	}
	p := make([]byte, len(masked))
	for i := range masked {
		p[i] = masked[i] ^ key[i%4]
	}
	if len(p) < 2 {
		return session.CloseProtocolError, "invalid close frame"
	}
	code := int(binary.BigEndian.Uint16(p))
	if !wireCloseCode(code) {
		return session.CloseProtocolError, "invalid close code"
	}
	reason := string(p[2:])
	if !utf8.ValidString(reason) {
		reason = ""
	}
	return code, reason
}

// wireCloseCode reports whether code may be sent in a close frame
// (coder/websocket's validWireCloseCode).
func wireCloseCode(code int) bool {
	switch code {
	case 1004, 1005, 1006, 1015:
		return false
	}
	return code >= 1000 && code <= 1014 || code >= 3000 && code <= 4999
}

// settleTimeout bounds how long the read loop waits, after the handlers are
// done, for the session to write what they queued and start its close
// frame: a writer that cannot get its batch out within WriteTimeout drops
// the connection anyway.
func (c *conn) settleTimeout() time.Duration { return c.h.cfg.WriteTimeout + closeTimeout }

// settle is called before coder/websocket reads a frame that ends the
// connection: the client's close (with its code and reason) or a protocol
// error (1002). On the read loop, it waits until every message read so far
// has been handled, then closes the session with that code, which writes
// the frames accepted so far and then the close frame, and returns once the
// close frame is being written (or the connection was dropped).
// coder/websocket, reading the frame then, finds our close frame sent: it
// answers nothing more and the read ends.
//
// Once this side is closing the connection there is nothing to wait for:
// that is also how coder/websocket's Close, which reads the client's close
// on the closing goroutine, gets through at once. The wait for the handlers
// ends too when this side closes meanwhile (Shutdown, Close, a pong
// timeout): the read loop waits inside Read here, holding coder/websocket's
// read lock, which its CloseNow needs.
func (c *conn) settle(code int, reason string) {
	closing := c.ws.closing()
	s := c.s
	if s.IsOpen() {
		c.mu.Lock()
		var idle chan struct{}
		if c.busy {
			idle = make(chan struct{})
			c.idle = idle
		}
		c.mu.Unlock()
		if idle != nil {
			select {
			case <-idle:
			case <-closing:
				return
			}
		}
		_ = s.CloseWith(code, reason)
	}
	t := time.NewTimer(c.settleTimeout())
	defer t.Stop()
	select {
	case <-closing:
	case <-t.C:
	}
}
