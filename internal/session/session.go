package session

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/asynkron/protoactor-go/actor"

	"github.com/troupehq/troupe/internal/transportapi"
)

// session states; they only move forward.
const (
	stateOpen     = iota // accepting sends
	stateClosing         // close requested: no new sends, queue drains, then the close frame
	stateFinished        // connection gone; OnClose has been (or is being) called
)

// Session is one WebSocket connection, backed by a session actor.
//
// All methods are safe to call from any goroutine, including from callbacks
// and handlers running for this same session. Sends after Close return
// ErrClosed; they never panic and never block on the network.
type Session struct {
	id     string
	sys    *System
	pid    *actor.PID
	conn   transportapi.Conn
	opts   *Options
	header http.Header
	remote string
	proto  string

	ctx    context.Context
	cancel context.CancelFunc

	// mu guards the outbound queue, the writer flag and the close state.
	mu          sync.Mutex
	state       int
	queued      int // frames accepted and not yet written or discarded
	queuedBytes int
	wq          []Frame // frames the actor has handed to the writer
	writing     bool
	discard     bool // drop queued frames instead of draining them
	closeCode   int
	closeReason string
	closeSent   bool
	finalCode   int // the code OnClose reports
	writers     sync.WaitGroup

	open     atomic.Bool // mirrors state == stateOpen for IsOpen without the lock
	identity atomic.Pointer[string]

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

// Header returns the header of the HTTP upgrade request. Do not modify it.
func (s *Session) Header() http.Header { return s.header }

// RemoteAddr returns the peer's network address.
func (s *Session) RemoteAddr() string { return s.remote }

// Subprotocol returns the negotiated WebSocket subprotocol ("" if none).
func (s *Session) Subprotocol() string { return s.proto }

// Context returns a context that is cancelled when the session has closed.
// Handlers use it to abandon work for a client that is gone.
func (s *Session) Context() context.Context { return s.ctx }

// IsOpen reports whether the session still accepts sends: false once a close
// has begun, whoever started it.
func (s *Session) IsOpen() bool { return s.open.Load() }

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

// SendShared is SendFrame for a frame prepared once with Share and queued
// on many sessions.
func SendShared(s *Session, sh *Shared) error {
	n := len(sh.frame.Data)
	s.mu.Lock()
	if s.state != stateOpen {
		s.mu.Unlock()
		return ErrClosed
	}
	// A single frame larger than the byte limit is still let through when
	// nothing else is queued, so that the limit cannot wedge a session.
	if s.queued >= s.opts.MaxQueuedMessages || (s.queued > 0 && s.queuedBytes+n > s.opts.MaxQueuedBytes) {
		s.mu.Unlock()
		s.overflow()
		return ErrSlowConsumer
	}
	s.queued++
	s.queuedBytes += n
	s.mu.Unlock()
	s.sys.root.Send(s.pid, sh)
	return nil
}

// Close starts a normal close (code 1000) with reason. Frames already
// accepted are written first, then the close frame. Closing a session that is
// already closing does nothing.
func (s *Session) Close(reason string) error { return s.CloseWith(CloseNormal, reason) }

// CloseWith is Close with an explicit close code. Reasons longer than the
// protocol allows (123 bytes) are cut.
func (s *Session) CloseWith(code int, reason string) error {
	s.beginClose(code, reason, false)
	return nil
}

// Drop drops the connection at once: queued frames are discarded, no close
// handshake is attempted, and OnClose reports CloseAbnormal with reason
// (for example "pong timeout" or "shutdown").
func Drop(s *Session, reason string) {
	s.beginClose(CloseAbnormal, reason, true)
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
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.finalCode
}

// QueueLen returns how many frames are accepted and not yet written.
func QueueLen(s *Session) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queued
}

// overflow closes a session whose queue is full and tells OnError, through
// the actor so that the sender (often a room) never runs user callbacks.
func (s *Session) overflow() {
	if s.beginClose(CloseTryAgainLater, "slow consumer: outbound queue full", true) {
		s.sys.overflows.Add(1)
		s.sys.root.Send(s.pid, &reportError{err: ErrSlowConsumer})
	}
}

// beginClose moves an open session to closing. The state change happens
// here, under the lock, before any message is posted: from this instant no
// send is accepted and the writer will not start another data frame if
// discard is set. The kick to the actor only wakes the writer, so it cannot
// be lost or stuck behind data in any way that matters.
func (s *Session) beginClose(code int, reason string, discard bool) bool {
	if len(reason) > 123 {
		reason = reason[:123]
	}
	s.mu.Lock()
	if s.state != stateOpen {
		if discard && s.state == stateClosing && !s.discard {
			// An immediate shutdown overrides a graceful close in progress.
			s.discard = true
			s.closeCode, s.closeReason = code, reason
			s.dropQueueLocked()
		}
		s.mu.Unlock()
		return false
	}
	s.state = stateClosing
	s.finalCode = code
	s.open.Store(false)
	s.closeCode, s.closeReason = code, reason
	if discard {
		s.discard = true
		s.dropQueueLocked()
	}
	s.mu.Unlock()
	s.sys.root.Send(s.pid, kickWriter{})
	return true
}

// dropQueueLocked discards what the writer has not taken yet. Frames still
// in the mailbox are dropped as they arrive (see accept).
func (s *Session) dropQueueLocked() {
	for _, f := range s.wq {
		s.queued--
		s.queuedBytes -= len(f.Data)
	}
	clear(s.wq)
	s.wq = s.wq[:0]
}

// Finish is called by the transport once the connection is gone (its read
// loop ended). peerCode and peerReason are what the peer sent in its close
// frame (CloseAbnormal if there was none). It stops the writer and the actor
// and calls OnClose exactly once; later calls do nothing.
//
// The code reported to OnClose is the one this side sent if it started the
// close, otherwise the peer's.
func Finish(s *Session, peerCode int, peerReason string) {
	s.mu.Lock()
	if s.state == stateFinished {
		s.mu.Unlock()
		return
	}
	code, reason := peerCode, peerReason
	if s.state == stateClosing {
		code, reason = s.closeCode, s.closeReason
	}
	s.state = stateFinished
	s.finalCode = code
	s.open.Store(false)
	s.discard = true
	s.dropQueueLocked()
	s.mu.Unlock()

	_ = s.conn.CloseNow()
	s.writers.Wait()
	s.cancel()
	s.sys.root.Stop(s.pid)
	s.sys.sessions.Add(-1)
	s.sys.sessionEnded(s)
	if s.opts.OnClose != nil {
		s.opts.OnClose(s, code, reason)
	}
}

// PID returns the session actor's PID, for tests that talk to the actor
// itself.
func PID(s *Session) *actor.PID { return s.pid }
