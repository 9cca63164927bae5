package serve

import (
	"encoding/binary"
	"errors"
	"net"

	"github.com/troupehq/troupe/transport"
)

// Direct framing: the data frames of a batch are framed here, straight into
// the cork buffer, instead of one coder/websocket Conn.Write per message.
//
// Why: every Conn.Write takes two of coder/websocket's channel-based locks
// and gives them back, and goes through its frame writer, for each message.
// In fan-out, one frame per message, that was 37 % of the server's CPU (the
// locks alone 20 %); framing a server's data frame is a header of 2 to 10
// bytes (RFC 6455 5.2: no mask, no extension, since compression is never
// negotiated).
//
// What it leans on, which coder/websocket does not promise: that once it has
// handed the connection over, what it writes to it is a sequence of whole
// frames, and only control frames (ping, pong, close) unless a data message
// is written through it. corkWriter checks that at run time: it reads the
// headers of everything coder/websocket writes (frameScan), so that our
// frames go in only between two of its frames, even when it writes one in
// pieces (its frame writer is small: a close frame with a long reason comes
// in several writes), and after its close frame no data frame goes out. If
// it ever writes something that is not a control frame, or a header that
// does not parse as one a server sends, the connection goes back to
// Conn.Write for good (fallback), which is correct whatever coder/websocket
// writes.

// errNotDirect says a batch must go through coder/websocket.
var errNotDirect = errors.New("direct framing not in use")

// frameScan follows the frames of a byte stream as it is written, reading
// only the headers.
type frameScan struct {
	// left is the payload bytes of the current frame still to come, or,
	// while a header is read, its payload length as its bytes come.
	left   uint64
	got    uint8 // header bytes seen of the frame being started
	need   uint8 // header bytes that frame has (2 until its second byte)
	extLen uint8 // bytes of its extended length (0, 2 or 8)
	first  uint8 // its first byte: FIN, RSV and opcode
	odd    bool  // something not a server's control frame was seen
	close  bool  // a close frame was seen: nothing may follow it
}

// boundary reports whether the stream is between two frames.
func (f *frameScan) boundary() bool { return f.got == 0 && f.left == 0 }

// feed follows p, the next bytes of the stream.
func (f *frameScan) feed(p []byte) {
	for len(p) > 0 {
		if f.got == 0 && f.left > 0 {
			n := min(uint64(len(p)), f.left)
			f.left -= n
			p = p[n:]
			continue
		}
		b := p[0]
		p = p[1:]
		f.got++
		switch {
		case f.got == 1:
			f.first, f.need, f.left, f.extLen = b, 2, 0, 0
		case f.got == 2:
			f.need = uint8(headerLen(f.first, b)) // closegate.go's
			f.odd = f.odd || b&0x80 != 0          // masked: not a server's frame
			switch n := b & 0x7f; n {
			case 126:
				f.extLen = 2
			case 127:
				f.extLen = 8
			default:
				f.left = uint64(n)
			}
		case f.got <= 2+f.extLen:
			f.left = f.left<<8 | uint64(b)
		}
		if f.got == f.need {
			f.frame()
		}
	}
}

// frame takes note of a header read whole.
func (f *frameScan) frame() {
	f.got = 0 // left is the payload's length
	opcode := f.first & 0x0f
	switch {
	case f.first&0x70 != 0, opcode < 0x8 || opcode > 0xa, f.first&0x80 == 0:
		// An extension bit, a data or continuation frame, a reserved
		// opcode, or a fragmented control frame.
		f.odd = true
	case opcode == 0x8:
		f.close = true
	}
}

// frameHeader appends the header of an unmasked, final data frame.
func frameHeader(p []byte, binaryFrame bool, n int) []byte {
	b0 := byte(0x81) // FIN, text
	if binaryFrame {
		b0 = 0x82
	}
	switch {
	case n < 126:
		return append(p, b0, byte(n))
	case n <= 0xffff:
		return binary.BigEndian.AppendUint16(append(p, b0, 126), uint16(n))
	default:
		return binary.BigEndian.AppendUint64(append(p, b0, 127), uint64(n))
	}
}

// frames writes msgs as data frames, corked; with ndjson, each run of
// joinable text messages as one frame of lines. It returns how many
// messages it wrote, and errNotDirect if coder/websocket's writes stopped
// looking as they should (see above): the rest go through it.
//
// The lock is taken for one frame at a time, as coder/websocket takes its
// own: a ping or pong it writes meanwhile (with a deadline of its own, past
// which it drops the connection) goes in between two frames of a long
// batch, not after it.
func (w *corkWriter) frames(msgs []transport.Message, ndjson bool) (int, error) {
	for i := 0; i < len(msgs); {
		j := i + 1
		size := len(msgs[i].Data)
		if ndjson && joinable(msgs[i]) {
			for ; j < len(msgs) && joinable(msgs[j]); j++ {
				size += 1 + len(msgs[j].Data)
			}
		}
		if err := w.frame(msgs[i:j], size); err != nil {
			return i, err
		}
		i = j
	}
	return len(msgs), nil
}

// frame writes msgs as one frame of size payload bytes, their lines.
func (w *corkWriter) frame(msgs []transport.Message, size int) error {
	w.lockBatch()
	defer w.mu.Unlock()
	for !w.scan.odd && !w.scan.boundary() && !w.shut {
		// coder/websocket is in the middle of a frame: its next write,
		// which finishes it, wakes us. That write may wait for the
		// socket: the batch's deadline bounds it.
		w.armLocked()
		if w.wake == nil {
			w.wake = make(chan struct{})
		}
		wake := w.wake
		w.mu.Unlock()
		<-wake
		w.lockBatch()
	}
	switch {
	case w.scan.odd:
		return errNotDirect
	case w.shut || w.scan.close:
		return net.ErrClosed
	}
	if b := w.buf; w.corked && b != nil && len(*b)+maxHeader <= maxCork {
		// Straight into the cork buffer: a header of our own would be
		// an allocation per batch (put's conn.Write keeps it escaping).
		*b = frameHeader(*b, msgs[0].Binary, size)
	} else {
		var hdr [maxHeader]byte
		if err := w.put(frameHeader(hdr[:0], msgs[0].Binary, size)); err != nil {
			return err
		}
	}
	for k, m := range msgs {
		if k > 0 {
			if err := w.put(newline); err != nil {
				return err
			}
		}
		if err := w.put(m.Data); err != nil {
			return err
		}
	}
	return nil
}

var newline = []byte{'\n'}
