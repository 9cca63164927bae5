package session

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/troupehq/troupe/transport"
)

// The session's state word: flags in the top bits, and below them the
// count of frames accepted and not yet written or discarded. Senders count
// a frame with a compare-and-swap that fails once closingBit is set, so a
// frame is either counted before the close began, and then written before
// the close frame (or dropped by a discarding close, which the sender could
// not tell apart from a drop after writing), or refused.
const (
	closingBit  = 1 << 63 // a close has begun: no send is accepted
	discardBit  = 1 << 62 // drop what is queued instead of writing it
	finishedBit = 1 << 61 // Finish ran: no write starts any more
	writingBit  = 1 << 60 // a writer goroutine is writing
	pendingBit  = 1 << 59 // the actor queued more meanwhile: report back
	countMask   = 1<<59 - 1
)

// Session is one connection, backed by a session actor.
//
// All methods are safe to call from any goroutine, including from callbacks
// and handlers running for this same session. Sends after Close return
// ErrClosed; they never panic and never block on the network.
//
// What serialises what:
//
//   - A send is admitted on the sender's goroutine with atomics alone: the
//     state word counts it against MaxQueuedMessages (or finds the session
//     closing), a second word adds its bytes. The frame is then posted to
//     the actor's mailbox, and the mailbox's order is the order frames are
//     written in.
//   - The session actor owns the outbound queue: it appends what arrives and,
//     when no write is in flight, hands the whole queue to a writer
//     goroutine. Only the actor starts a writer, and only once the state
//     word says the previous one is gone, so writes never overlap. A
//     writer that finds the actor queued more meanwhile (or a close
//     waiting, or its write failed) reports back with a message.
//   - A close (Close, CloseWith, an overflow, a write failure, Drop) sets the
//     state word's flags at once and posts a message; the actor writes the
//     close frame when nothing accepted remains to be written (or at once,
//     discarding the queue, for a drop).
//   - Finish, on the transport's goroutine, marks the session finished so
//     that no writer starts again, cuts the connection and waits for a
//     writer still running; then it runs the end hooks and OnClose.
type Session struct {
	id     string
	sys    *System
	pid    *actor.PID
	conn   transport.Conn
	opts   *Options
	header packedHeader
	remote string
	proto  string

	ctx    context.Context
	cancel context.CancelFunc

	state       atomic.Uint64 // flags and accepted count (see closingBit)
	queuedBytes atomic.Int64  // bytes of the frames counted in state
	// ending is the close in effect, nil while the session is open.
	ending atomic.Pointer[closeReq]
	// finalCode is what OnClose reported, once Finish has run.
	finalCode atomic.Int32
	// gone is set by Finish when it has to wait for a writer; the writer
	// closes it as it leaves.
	gone atomic.Pointer[chan struct{}]
	// writeErr is a failed write's error for OnError, until the actor or
	// Finish reports it (see writeFailed).
	writeErr atomic.Pointer[error]

	identity atomic.Pointer[string]

	// lagSince is when, under Options.Resync, the session's room traffic
	// first overflowed since it last caught up (UnixNano; 0: not behind),
	// and gapped whether a frame of it was refused since the last write
	// finished. See resync.go.
	lagSince atomic.Int64
	gapped   atomic.Bool

	valuesMu sync.Mutex
	values   map[any]any

	requests requests
}

// Info describes the connection a session is created for.
type Info struct {
	// ID is the session's identifier; a new UUID is used when empty.
	ID string
	// Header is the upgrade request's header.
	Header http.Header
	// RemoteAddr is the peer's address as the HTTP server saw it.
	RemoteAddr string
	// Subprotocol is the negotiated WebSocket subprotocol, if any.
	Subprotocol string
}

// ID returns the session's identifier, a UUID unless the transport chose one.
func (s *Session) ID() string { return s.id }

// Header returns the header of the HTTP upgrade request (cookies, origin,
// user agent, an application's own fields), without the WebSocket
// handshake's fields (Connection, Upgrade, Sec-WebSocket-Key, -Version,
// -Extensions). The session keeps it packed, which costs an idle
// connection only the bytes of its fields: each call builds a new copy, so
// read what you need once (in OnOpen) rather than in every handler.
func (s *Session) Header() http.Header { return s.header.unpack() }

// RemoteAddr returns the peer's network address.
func (s *Session) RemoteAddr() string { return s.remote }

// Subprotocol returns the negotiated WebSocket subprotocol ("" if none).
func (s *Session) Subprotocol() string { return s.proto }

// Context returns a context that is cancelled when the session has closed.
// Handlers use it to abandon work for a client that is gone.
func (s *Session) Context() context.Context { return s.ctx }

// IsOpen reports whether the session still accepts sends: false once a close
// has begun, whoever started it.
func (s *Session) IsOpen() bool { return s.state.Load()&closingBit == 0 }

// SetIdentity records who the client is (for example the user ID an
// authentication hook found). Rooms and handlers read it with Identity.
func (s *Session) SetIdentity(id string) { s.identity.Store(&id) }

// Identity returns what SetIdentity recorded, or "" if nothing was.
func (s *Session) Identity() string {
	if p := s.identity.Load(); p != nil {
		return *p
	}
	return ""
}

// Set stores a per-session value under key, like a context value that can
// change. Keys follow the same advice as context keys: use your own type.
func (s *Session) Set(key, value any) {
	s.valuesMu.Lock()
	if s.values == nil {
		s.values = make(map[any]any, 2)
	}
	s.values[key] = value
	s.valuesMu.Unlock()
}

// Get returns the value stored under key by Set.
func (s *Session) Get(key any) (any, bool) {
	s.valuesMu.Lock()
	defer s.valuesMu.Unlock()
	v, ok := s.values[key]
	return v, ok
}

// SendText queues p as a text frame.
func (s *Session) SendText(p []byte) error { return SendFrame(s, Frame{Data: p}) }

// SendBinary queues p as a binary frame.
func (s *Session) SendBinary(p []byte) error { return SendFrame(s, Frame{Data: p, Binary: true}) }

// Send encodes a typed envelope {"type": typ, "payload": payload} and queues
// it as a text frame.
func (s *Session) Send(typ string, payload any) error {
	if s.opts.Encode == nil {
		return ErrNoEncoder
	}
	p, err := s.opts.Encode(typ, payload)
	if err != nil {
		return err
	}
	return SendFrame(s, Frame{Data: p})
}

// SendFrame queues f for writing. The caller must not modify f.Data
// afterwards. It returns ErrClosed if the session is closing or closed, and
// ErrSlowConsumer if the outbound queue is full, in which case the session is
// closed with CloseTryAgainLater: a client never silently misses a frame that
// was accepted for it.
//
// SendFrame never blocks on the network: it counts the frame against the
// queue limits and posts it to the session actor's mailbox.
func SendFrame(s *Session, f Frame) error { return SendShared(s, &Shared{frame: f}) }

// SendShared is SendFrame for a frame prepared once with Share (or
// ShareRoom) and queued on many sessions. Under Options.Resync, room
// traffic that finds the queue full is not queued and returns ErrResynced:
// the session stays open and its client is sent a room.resync.
func SendShared(s *Session, sh *Shared) error {
	n := int64(len(sh.frame.Data))
	// The bytes are added first and taken back if the frame is refused, so
	// that concurrent senders never exceed the byte limit together.
	total := s.queuedBytes.Add(n)
	for {
		w := s.state.Load()
		if w&closingBit != 0 {
			s.queuedBytes.Add(-n)
			return ErrClosed
		}
		// A single frame larger than the byte limit is still let through
		// when nothing else is queued, so that the limit cannot wedge a
		// session.
		queued := w & countMask
		maxN, maxBytes := uint64(s.opts.MaxQueuedMessages), int64(s.opts.MaxQueuedBytes)
		if sh.room != "" {
			maxN, maxBytes = s.opts.roomMessages, s.opts.roomBytes
		}
		if queued >= maxN || (queued > 0 && total > maxBytes) {
			s.queuedBytes.Add(-n)
			if sh.room != "" && s.opts.Resync {
				s.gap(sh)
				return ErrResynced
			}
			s.overflow(overflowReason)
			return ErrSlowConsumer
		}
		if s.state.CompareAndSwap(w, w+1) {
			break
		}
	}
	s.sys.root.Send(s.pid, sh)
	return nil
}

// Close starts a normal close (code 1000) with reason. Frames already
// accepted are written first, then the close frame. Closing a session that is
// already closing does nothing.
func (s *Session) Close(reason string) error { return s.CloseWith(CloseNormal, reason) }

// CloseWith is Close with an explicit close code. Reasons longer than the
// protocol allows (123 bytes) are cut, at a character boundary.
func (s *Session) CloseWith(code int, reason string) error {
	s.beginClose(code, reason, false, nil)
	return nil
}

// Drop drops the connection at once: queued frames are discarded, no close
// handshake is attempted, and OnClose reports CloseAbnormal with reason
// (for example "pong timeout" or "shutdown").
func Drop(s *Session, reason string) {
	s.beginClose(CloseAbnormal, reason, true, nil)
	_ = s.conn.CloseNow()
}

// EmitError hands err to the server's error handler (OnError) for this
// session, from the calling goroutine.
func (s *Session) EmitError(err error) {
	if err != nil && s.opts.OnError != nil {
		s.opts.OnError(s, err)
	}
}

// CloseCode returns the close code OnClose reported (or will report, once a
// close has begun); 0 while the session is open.
func (s *Session) CloseCode() int {
	if c := s.finalCode.Load(); c != 0 {
		return int(c)
	}
	if c := s.ending.Load(); c != nil {
		return c.code
	}
	return 0
}

// QueueLen returns how many frames are accepted and not yet written.
func QueueLen(s *Session) int { return int(s.state.Load() & countMask) }

// overflow closes a session whose queue is full (or, under Resync, that
// stayed behind too long) and tells OnError, through the actor so that the
// sender (often a room) never runs user callbacks.
func (s *Session) overflow(reason string) {
	if s.beginClose(CloseTryAgainLater, reason, true, ErrSlowConsumer) {
		s.sys.overflows.Add(1)
	}
}

// maxReason is what a close frame leaves for the reason (RFC 6455, 5.5:
// 125 bytes of payload, 2 of them the code).
const maxReason = 123

// cutReason cuts reason to maxReason bytes without splitting a character.
func cutReason(reason string) string {
	if len(reason) <= maxReason {
		return reason
	}
	i := maxReason
	// Back up over the continuation bytes of a character cut in two; a
	// character is at most utf8.UTFMax bytes, so invalid input (a run of
	// continuation bytes) is cut at most that far back.
	for j := i; j > i-utf8.UTFMax && j > 0; j-- {
		if utf8.RuneStart(reason[j]) {
			i = j
			break
		}
	}
	return reason[:i]
}

// beginClose asks for a close: from an open session, or, with discard, to
// turn a graceful close in progress into an immediate one. It reports
// whether it was the first close. The state flags are set here, before the
// message to the actor is posted: from this instant no send is accepted,
// and a discarding close makes the actor drop frames even before it sees
// the message. report, if set, goes to OnError from the actor, and only
// for the first close.
func (s *Session) beginClose(code int, reason string, discard bool, report error) (first bool) {
	req := &closeReq{code: code, reason: cutReason(reason), discard: discard}
	for {
		cur := s.ending.Load()
		if cur != nil && (cur.discard || !discard) {
			return false
		}
		if s.ending.CompareAndSwap(cur, req) {
			first = cur == nil
			break
		}
	}
	if first {
		req.report = report
	}
	bits := uint64(closingBit)
	if discard {
		bits |= discardBit
	}
	s.state.Or(bits)
	s.sys.root.Send(s.pid, req)
	return first
}

// Finish is called by the transport once the connection is gone (its read
// loop ended). peerCode and peerReason are what the peer sent in its close
// frame (CloseAbnormal if there was none). It stops the writer and the actor
// and calls OnClose exactly once, on the calling goroutine, after any write
// in flight has returned (it cuts the connection, which makes a blocked
// write return); later calls do nothing.
//
// The code reported to OnClose is the one this side sent if it started the
// close, otherwise the peer's.
func Finish(s *Session, peerCode int, peerReason string) {
	old := s.state.Or(closingBit | discardBit | finishedBit)
	if old&finishedBit != 0 {
		return
	}
	code, reason := peerCode, peerReason
	if c := s.ending.Load(); c != nil {
		code, reason = c.code, c.reason
	}
	s.finalCode.Store(int32(code))

	_ = s.conn.CloseNow()
	if old&writingBit != 0 {
		// Wait for the writer, unless it left before it could see gone
		// (it clears writingBit before it looks).
		gone := make(chan struct{})
		s.gone.Store(&gone)
		if s.state.Load()&writingBit != 0 {
			<-gone
		}
	}
	s.cancel()
	s.sys.root.Stop(s.pid)
	// The actor, stopped, may never get the writer's word: a failed
	// write is reported here then, before OnClose.
	s.reportWriteErr()
	s.sys.sessions.Add(-1)
	s.sys.sessionEnded(s)
	if s.opts.OnClose != nil {
		s.opts.OnClose(s, code, reason)
	}
}

// reportWriteErr hands a failed write's error to OnError, once.
func (s *Session) reportWriteErr() {
	if p := s.writeErr.Swap(nil); p != nil {
		s.sys.SafeCall(func() { s.EmitError(*p) })
	}
}

// PID returns the session actor's PID, for tests that talk to the actor
// itself.
func PID(s *Session) *actor.PID { return s.pid }
