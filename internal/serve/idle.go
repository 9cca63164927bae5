package serve

// What an idle connection holds while it waits for its client.
//
// An idle connection's read loop would be a goroutine parked in a read, and
// its stack most of what the connection costs. Parked inside
// coder/websocket's Read, under its frame reader, it holds about 1.7 KiB of
// frames; with the runtime's guard space that needs a 4 KiB stack, and the
// collector never gives it back (it halves a stack only when under a
// quarter of it, guard included, is in use). So between messages, with
// nothing buffered (ready), the read loop waits for the socket itself
// (wait), outside Read, and reads what arrives into the frame reader's
// buffer before Read parses it.
//
// When the connection is idle more than busy (its first few waits, and any
// wait after one of over longWait), the read loop does not wait at all: on
// Linux it puts the socket in the poller's epoll set and its goroutine
// ends, so the idle connection holds no goroutine (poller_linux.go); a
// pooled goroutine reads on once the client sends. Elsewhere it waits on a
// new goroutine, started with a 2 KiB stack. A busy connection keeps its
// goroutine: a new goroutine per message grows its stack each time (in a
// CPU profile of echo traffic, 7.7 % of the server's time went to stack
// growth and 1.3 % to starting goroutines).
//
// Control frames would undo that. The server's pings make every client
// send a pong, and coder/websocket handles a pong inside Read and reads on
// for a message: the read loop would park deep again after the first ping.
// So when the bytes a wait read start with whole control frames, the frame
// reader serves those bytes and then an empty text message of its own,
// which makes Read return at a message boundary; the read loop drops that
// message (takeFake) and can wait shallow again. The pong has done its
// work by then: coder/websocket handled it on the way.

// idleReader is the frame reader's side of that, where the platform
// supports it; wsConn.idle is nil elsewhere.
type idleReader interface {
	// ready reports whether bytes are buffered: Read would not wait.
	ready() bool
	// wait returns once bytes from the socket are buffered, or it failed.
	wait()
	// takeFake reports whether the message Read just returned was the
	// frame reader's own, and forgets it.
	takeFake() bool
	// take returns the next message if it lies whole in the buffer and
	// may be taken without coder/websocket (direct.go).
	take(maxSize int64) (bin bool, data []byte, ok bool)
	// lockReads and unlockReads surround a Close, which reads too.
	lockReads()
	unlockReads()
}

// emptyMessage is a masked, final, empty text frame: what a client would
// send for "". A server reading it as a client's frame needs the mask bit.
var emptyMessage = [6]byte{0x81, 0x80, 0, 0, 0, 0}

// controlPrefix returns the length of the whole control frames (close, ping,
// pong) that b starts with, as a client sends them (masked), or 0. It stops
// at the first data frame, at anything malformed (coder/websocket then
// reports it) and at a frame b holds only part of.
func controlPrefix(b []byte) int {
	n := 0
	for len(b)-n >= 6 {
		h0, h1 := b[n], b[n+1]
		if h0&0x70 != 0 || h0&0x80 == 0 || h0&0x08 == 0 || h1&0x80 == 0 {
			break // reserved bits, not final, a data frame, or unmasked
		}
		size := 6 + int(h1&0x7f)
		if h1&0x7f > 125 || len(b)-n < size {
			break
		}
		n += size
	}
	return n
}
