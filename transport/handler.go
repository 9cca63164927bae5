// Package transport serves WebSocket connections over HTTP with
// coder/websocket and turns each one into a session actor: the upgrade
// handshake and origin check, the read loop, heartbeats and idle timeouts,
// the message size limit, and graceful or immediate shutdown.
package transport

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/coder/websocket"
	"github.com/troupehq/troupe/internal/gopool"
	"github.com/troupehq/troupe/internal/session"
	"github.com/troupehq/troupe/internal/wire"
)

// SubprotocolNDJSON is the subprotocol under which a session coalesces the
// messages queued for it into one text frame of newline-separated envelopes.
const SubprotocolNDJSON = "ndjson"

// Hooks are the callbacks a Handler drives. OnOpen, OnFrame and OnClose run
// one at a time per session, in order (OnOpen first, then the messages in
// the order the client sent them, OnClose last), on a worker goroutine
// taken while the session has messages waiting (not on the read loop).
// While a session's callbacks fall behind, at most a few of its messages
// wait and its connection is not read: the client is held back.
type Hooks struct {
	// Authorize, if set, runs before the upgrade; an error answers the
	// HTTP request with status (401 if status is 0) and no session is made.
	Authorize func(r *http.Request) (identity string, status int, err error)
	OnOpen    func(s *session.Session)
	OnFrame   func(s *session.Session, binary bool, data []byte)
	OnError   func(s *session.Session, err error)
	OnClose   func(s *session.Session, code int, reason string)
	// OnRateLimited is told of every "rate_limited" answer sent.
	OnRateLimited func(s *session.Session)
	// Encode builds typed envelopes for Session.Send.
	Encode func(typ string, payload any) ([]byte, error)
	// EncodeRequest builds the envelopes of Session.Request.
	EncodeRequest func(typ string, payload any, id string) ([]byte, error)
}

// Handler is an http.Handler that accepts WebSocket connections.
type Handler struct {
	cfg   Config
	sys   *session.System
	hooks Hooks

	stats Stats

	mu       sync.Mutex
	drain    *sync.Cond // signalled when active drops
	closed   bool
	active   int                 // connections being upgraded or served, until OnClose has returned
	conns    int                 // connections against MaxConnections: upgrading, or open until OnClose
	workers  map[uint64]struct{} // goroutine IDs of the running workers
	sessions map[string]*session.Session

	pool gopool.Pool // the workers (workers.go)
	poll *poller     // holds idle connections (poller_linux.go)
}

// NewHandler returns a handler whose sessions live in sys.
func NewHandler(sys *session.System, cfg Config, hooks Hooks) (*Handler, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h := &Handler{cfg: cfg, sys: sys, hooks: hooks,
		sessions: make(map[string]*session.Session), workers: make(map[uint64]struct{})}
	h.drain = sync.NewCond(&h.mu)
	h.initWorkers()
	h.poll = newPoller()
	return h, nil
}

// Config returns the settings in effect, defaults applied.
func (h *Handler) Config() Config { return h.cfg }

// ServeHTTP upgrades the request and serves the connection until it closes.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		h.stats.refused(http.StatusServiceUnavailable)
		http.Error(w, "server shutting down", http.StatusServiceUnavailable)
		return
	}
	if h.cfg.MaxConnections > 0 && h.conns >= h.cfg.MaxConnections {
		h.mu.Unlock()
		h.stats.refused(http.StatusServiceUnavailable)
		http.Error(w, "too many connections", http.StatusServiceUnavailable)
		return
	}
	h.active++
	h.conns++
	h.mu.Unlock()
	handedOff := false
	var s *session.Session
	defer func() {
		if s == nil {
			// No session: no OnClose to give the place back.
			h.mu.Lock()
			h.conns--
			h.mu.Unlock()
		}
		if !handedOff {
			h.done()
		}
	}()

	var identity string
	if h.hooks.Authorize != nil {
		id, status, err := h.authorize(r)
		if err != nil {
			if status == 0 {
				status = http.StatusUnauthorized
			}
			h.stats.refused(status)
			http.Error(w, err.Error(), status)
			return
		}
		identity = id
	}

	hc := &hijackCapture{ResponseWriter: w}
	opts := &websocket.AcceptOptions{
		OriginPatterns:     h.cfg.OriginPatterns,
		InsecureSkipVerify: h.cfg.InsecureSkipOriginCheck,
		CompressionMode:    websocket.CompressionDisabled,
	}
	if !h.cfg.DisableNDJSON {
		opts.Subprotocols = []string{SubprotocolNDJSON}
	}
	ws, err := websocket.Accept(hc, r, opts)
	if err != nil {
		if hc.status >= 400 {
			h.stats.refused(hc.status)
		}
		h.cfg.Logger.Debug("troupe: upgrade refused", "remote", r.RemoteAddr, "err", err)
		return
	}
	ws.SetReadLimit(h.cfg.MaxMessageSize)
	conn := &wsConn{ws: ws, raw: hc.conn, cork: hc.cork, cc: hc.cc, ndjson: ws.Subprotocol() == SubprotocolNDJSON}

	s = h.sys.NewSession(conn, session.Info{
		Header:      r.Header,
		RemoteAddr:  r.RemoteAddr,
		Subprotocol: ws.Subprotocol(),
	}, session.Options{
		MaxQueuedMessages: h.cfg.MaxQueuedMessages,
		MaxQueuedBytes:    h.cfg.MaxQueuedBytes,
		WriteTimeout:      h.cfg.WriteTimeout,
		Encode:            h.hooks.Encode,
		EncodeRequest:     h.hooks.EncodeRequest,
		OnError:           h.hooks.OnError,
		OnClose:           h.onClose,
	})
	if identity != "" {
		s.SetIdentity(identity)
	}

	h.mu.Lock()
	if h.closed {
		// Shutdown began during the handshake: this session was not
		// in the list it closed, so close it here.
		h.mu.Unlock()
		_ = ws.Close(websocket.StatusGoingAway, "server shutting down")
		session.Finish(s, session.CloseGoingAway, "server shutting down")
		return
	}
	h.sessions[s.ID()] = s
	h.mu.Unlock()

	// The read loop gets a goroutine of its own and ServeHTTP returns: the
	// net/http connection goroutine, its grown stack and its buffers are
	// then freed, which is most of what an idle connection would cost.
	handedOff = true
	go newConn(h, s, conn).readLoop()
}

// authorize runs the Authorize hook under HandshakeTimeout. A hook that
// ignores its request's context is not waited for past the deadline: the
// client is refused then, and the hook's late answer is discarded.
func (h *Handler) authorize(r *http.Request) (string, int, error) {
	ctx, cancel := context.WithTimeout(r.Context(), h.cfg.HandshakeTimeout)
	defer cancel()
	type result struct {
		id     string
		status int
		err    error
	}
	done := make(chan result, 1)
	rc := r.WithContext(ctx)
	go func() {
		var res result
		defer func() {
			if p := recover(); p != nil {
				res = result{status: http.StatusInternalServerError, err: fmt.Errorf("troupe: panic in Authorize: %v", p)}
			}
			done <- res
		}()
		res.id, res.status, res.err = h.hooks.Authorize(rc)
	}()
	timedOut := errors.New("authentication timed out")
	select {
	case res := <-done:
		if res.err == nil && ctx.Err() != nil {
			return "", http.StatusUnauthorized, timedOut
		}
		return res.id, res.status, res.err
	case <-ctx.Done():
		return "", http.StatusUnauthorized, timedOut
	}
}

// done marks one connection as finished, for Shutdown's wait.
func (h *Handler) done() {
	h.mu.Lock()
	h.active--
	h.drain.Broadcast()
	h.mu.Unlock()
}

// rateLimited answers a message over the rate limit.
var rateLimited = wire.Error(nil, "rate_limited", "too many messages; slow down")

// call runs user code for s; a panic is reported to OnError and the session
// lives on. It reports whether fn returned normally.
func (h *Handler) call(s *session.Session, fn func()) (ok bool) {
	defer func() {
		if r := recover(); r != nil {
			ok = false
			s.EmitError(fmt.Errorf("troupe: panic in handler: %v", r))
		}
	}()
	fn()
	return true
}

// frame hands one message to OnFrame, like call but without a closure to
// allocate for every message.
func (h *Handler) frame(s *session.Session, binary bool, data []byte) {
	defer func() {
		if r := recover(); r != nil {
			s.EmitError(fmt.Errorf("troupe: panic in handler: %v", r))
		}
	}()
	h.hooks.OnFrame(s, binary, data)
}

func (h *Handler) onClose(s *session.Session, code int, reason string) {
	h.mu.Lock()
	delete(h.sessions, s.ID())
	h.conns--
	h.mu.Unlock()
	if h.hooks.OnClose != nil {
		h.call(s, func() { h.hooks.OnClose(s, code, reason) })
	}
}

// closeStatus turns the error that ended the read loop into the peer's
// close code and reason.
func closeStatus(err error) (int, string) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		return int(ce.Code), ce.Reason
	}
	if strings.Contains(err.Error(), "read limited at") {
		// coder/websocket has already sent 1009 to the client.
		return session.CloseMessageTooBig, "message too big"
	}
	return session.CloseAbnormal, "connection lost"
}

// Session returns the open session with the given ID, or nil.
func (h *Handler) Session(id string) *session.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions[id]
}

// Sessions returns a snapshot of the sessions not yet closed.
func (h *Handler) Sessions() []*session.Session {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]*session.Session, 0, len(h.sessions))
	for _, s := range h.sessions {
		out = append(out, s)
	}
	return out
}

// Shutdown stops accepting connections, closes every session with 1001
// (queued frames are written first), and waits until all are gone or ctx
// ends, when it drops the rest. It returns ctx's error in that case.
//
// It may be called from any goroutine, including a callback of one of the
// handler's sessions: that one connection is then not waited for (it ends
// when the callback returns).
func (h *Handler) Shutdown(ctx context.Context) error {
	if !h.stopAccepting() {
		<-h.drained()
		return nil
	}
	defer h.stopWorkers()
	for _, s := range h.Sessions() {
		_ = s.CloseWith(session.CloseGoingAway, "server shutting down")
	}
	done := h.drained()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		for _, s := range h.Sessions() {
			session.Drop(s, "shutdown")
		}
		<-done
		return ctx.Err()
	}
}

// Close drops every connection at once and waits for their goroutines
// (except the caller's own, when called from a callback).
func (h *Handler) Close() {
	h.stopAccepting()
	defer h.stopWorkers()
	for _, s := range h.Sessions() {
		session.Drop(s, "shutdown")
	}
	<-h.drained()
}

// drained returns a channel closed once every connection has ended (its
// OnClose returned), not counting the caller's own if the caller is a
// worker running one of its callbacks (waiting for it would wait forever).
func (h *Handler) drained() <-chan struct{} {
	self := goroutineID()
	h.mu.Lock()
	_, own := h.workers[self]
	h.mu.Unlock()
	allow := 0
	if own {
		allow = 1
	}
	done := make(chan struct{})
	go func() {
		h.mu.Lock()
		for h.active > allow {
			h.drain.Wait()
		}
		h.mu.Unlock()
		close(done)
	}()
	return done
}

// stopAccepting reports whether this call was the one that stopped it.
func (h *Handler) stopAccepting() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return false
	}
	h.closed = true
	return true
}
