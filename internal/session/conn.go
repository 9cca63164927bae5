package session

import "time"

// Conn is what a session writes to. transport adapts a WebSocket connection
// to it; MemConn is an in-memory version for tests and benchmarks.
//
// The session guarantees that Write, SetWriteDeadline and Close are never
// called concurrently with each other (one writer per connection); CloseNow
// may be called at any time from any goroutine and must make a blocked Write
// return.
type Conn interface {
	// Write sends p as one message (a text frame, or binary if binary is set).
	Write(binary bool, p []byte) error
	// SetWriteDeadline bounds the writes that follow; the zero time clears it.
	SetWriteDeadline(t time.Time) error
	// Close performs the closing handshake with code and reason. It may
	// block until the peer answers or a timeout passes.
	Close(code int, reason string) error
	// CloseNow drops the connection without a handshake.
	CloseNow() error
}

// Frame is one outbound WebSocket message. Data is never modified after it
// is handed to a session, so one Frame may be queued on many sessions (a room
// broadcast encodes once and shares the bytes).
type Frame struct {
	Data   []byte
	Binary bool
}

// Batcher is implemented by a Conn that can hold back the frames of a batch
// and send them together (transport's connections do, to pay one system
// call per batch instead of one per frame). The session calls BeginBatch
// before writing the frames it took from its queue and EndBatch after them;
// an error from EndBatch is a write error.
type Batcher interface {
	BeginBatch()
	EndBatch() error
}
