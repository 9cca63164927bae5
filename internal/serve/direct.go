package serve

import "encoding/binary"

// Direct reading: the read loop takes a message out of the read buffer
// itself when it can, instead of through coder/websocket's Reader.
//
// Why: in a CPU profile of echo traffic, coder/websocket's read path (its
// Reader, with two channel-based lock round trips, the header read a byte
// at a time, then the message reader and its limit reader) was about a
// sixth of the server's time, for messages that already lay whole in the
// buffer under it.
//
// When: only where nothing coder/websocket holds or is in the middle of
// is skipped. The message must lie whole in the lending reader's buffer
// as one final, unfragmented text or binary frame, masked, with no
// reserved bit, at most MaxMessageSize (badFrame finds nothing wrong with
// it); the frame gate above must be at a frame boundary, outside a
// fragmented message, with nothing held back; the 16-byte reader
// coder/websocket reads through must hold nothing; and no empty message of
// the idle machinery may be planned (idle.go). Anything else — a control
// frame, a fragment, a frame cut by the end of the buffer, a message over
// the limit, Close reading at the same time — goes through coder/websocket
// as before, which then answers pings, reports errors and closes.
//
// What it leans on: that coder/websocket, between two messages, keeps no
// state about the stream other than what it reads next, and reads frames
// only through the reader Hijack returns. The second is checked once per
// process (adoption.go); where it fails there is no lending reader and no
// direct reading. The first is checked at every take as far as it can be
// seen from outside: the reader coder/websocket reads through is empty and
// the gate under it sits between two whole frames. coder/websocket v1.8
// keeps only "the previous message was read to its end" there, which the
// read loop always does.

// directReading is on but for the benchmark of the path it replaces.
var directReading = true

// wholeFrame reports whether b starts with a whole frame that direct
// reading may take (see above): its header's length hl and its payload's
// length n, with bin set for a binary message.
func wholeFrame(b []byte, maxSize int64) (hl int, n int64, bin, ok bool) {
	if len(b) < 6 {
		return 0, 0, false, false
	}
	h0, h1 := b[0], b[1]
	if h0 != 0x81 && h0 != 0x82 || h1&0x80 == 0 {
		return 0, 0, false, false // not final, reserved bits, not data, or unmasked
	}
	hl = headerLen(h0, h1)
	if len(b) < hl {
		return 0, 0, false, false
	}
	n = payloadLen(b[:hl])
	if n < 0 || n > maxSize || n > int64(len(b)-hl) {
		return 0, 0, false, false
	}
	return hl, n, h0 == 0x82, true
}

// unmaskInto writes src unmasked with the client's key into dst, which is
// as long as src. key is the four mask bytes as they came, read little
// endian.
func unmaskInto(dst, src []byte, key uint32) {
	k := uint64(key)<<32 | uint64(key)
	i := 0
	for ; i+8 <= len(src); i += 8 {
		binary.LittleEndian.PutUint64(dst[i:], binary.LittleEndian.Uint64(src[i:])^k)
	}
	for ; i < len(src); i++ {
		dst[i] = src[i] ^ byte(key>>(8*(i&3)))
	}
}

// atBoundary reports whether the gate is between two whole frames, outside
// a fragmented message, with nothing held back: the next byte under it
// starts a frame, and nothing of the last one is left to serve.
func (g *frameGate) atBoundary() bool {
	return !g.through && !g.inMsg && g.left == 0 && g.off == g.n && len(g.held) == 0
}
